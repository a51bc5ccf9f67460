"""The serial console of ``hartvm boot``: the terminal as the guest's UART.

As with ``qemu-system-riscv64 -nographic``: on a terminal, stdin is put in
raw mode and every key goes to the guest, except the escape Ctrl-A: Ctrl-A X
quits, Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A H lists the keys. When stdin
is not a terminal its bytes are piped to the guest as they come.

The console also keeps the last lines the guest printed (for reports when a
run ends badly) and notices a Linux kernel panic.
"""

import collections
import contextlib
import os
import sys

CTRL_A = 0x01
PANIC_END = b"---[ end Kernel panic"
HELP = (b"\r\nC-a x    exit\r\nC-a C-a  send C-a\r\nC-a h    this help\r\n")


class QuitRequested(Exception):
    """The user typed Ctrl-A X."""


class Console:
    def __init__(self, stream=None, keep_lines: int = 20):
        self._stream = stream or sys.stdout.buffer
        self._lines = collections.deque(maxlen=keep_lines)
        self._partial = bytearray()
        self._escape = False
        self.panicked = False
        self.interactive = False

    # --- output -------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self._stream.write(data)
        self._partial.extend(data)
        while b"\n" in self._partial:
            line, _, rest = bytes(self._partial).partition(b"\n")
            self._lines.append(line.rstrip(b"\r"))
            self._partial = bytearray(rest)
            if line.startswith(PANIC_END) or PANIC_END in line:
                self.panicked = True
        if len(self._partial) > 4096:  # a guest that never prints a newline
            self._lines.append(bytes(self._partial))
            self._partial.clear()

    def flush(self) -> None:
        self._stream.flush()

    def last_lines(self) -> list[str]:
        lines = list(self._lines)
        if self._partial:
            lines.append(bytes(self._partial))
        return [line.decode("utf-8", "replace") for line in lines]

    # --- input ----------------------------------------------------------------------
    def filter_input(self, data: bytes) -> bytes:
        """Keys typed on the terminal, minus the Ctrl-A escapes (QEMU's keys)."""
        if not self.interactive:
            return data
        out = bytearray()
        for byte in data:
            if self._escape:
                self._escape = False
                if byte in (ord("x"), ord("X")):
                    raise QuitRequested()
                if byte == CTRL_A:
                    out.append(CTRL_A)
                elif byte in (ord("h"), ord("H"), ord("?")):
                    self._stream.write(HELP)
                    self._stream.flush()
            elif byte == CTRL_A:
                self._escape = True
            else:
                out.append(byte)
        return bytes(out)

    @contextlib.contextmanager
    def attached(self, fd: int = 0):
        """Raw mode on a terminal for the duration of the run (restored afterwards)."""
        try:
            is_tty = os.isatty(fd)
        except OSError:
            is_tty = False
        self.interactive = is_tty
        if not is_tty:
            yield
            return
        import termios
        import tty
        saved = termios.tcgetattr(fd)
        try:
            tty.setraw(fd)
            yield
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
