"""The serial console of ``hartvm boot``: the terminal as the guest's UART.

As with ``qemu-system-riscv64 -nographic``: on a terminal, stdin is put in
raw mode and every key goes to the guest, except the escape Ctrl-A: Ctrl-A X
quits, Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A H lists the keys. When stdin
is not a terminal its bytes are piped to the guest as they come.

The console also keeps the last lines the guest printed (for reports when a
run ends badly) and notices a Linux kernel panic.
"""

import contextlib
import os
import signal
import sys

from ..vmm.console_log import ConsoleLog

CTRL_A = 0x01
HELP = (b"\r\nC-a x    exit\r\nC-a C-a  send C-a\r\nC-a h    this help\r\n")


class QuitRequested(Exception):
    """The user typed Ctrl-A X."""


class WindowSize:
    """The size of the terminal on ``fd``, and a descriptor (``fd`` of this object)
    that is readable once the window changed (SIGWINCH), so that a run loop
    can pass the new size on, as ssh and QEMU's consoles do. Use as a context
    manager (it installs the signal handler and restores the old one)."""

    def __init__(self, terminal_fd: int = 0):
        self.terminal_fd = terminal_fd
        self.fd = self._write = -1
        self._previous = None

    def size(self) -> tuple[int, int]:
        """(rows, columns), 24 x 80 when ``terminal_fd`` is no terminal (or one
        without a size); drains
        the change notices."""
        if self.fd >= 0:
            try:
                while os.read(self.fd, 64):
                    pass
            except (BlockingIOError, OSError):
                pass
        try:
            size = os.get_terminal_size(self.terminal_fd)
        except OSError:
            return 24, 80
        # A terminal that was never given a size says 0 x 0 (a bare pty): the default.
        return min(size.lines, 0xFFFF) or 24, min(size.columns, 0xFFFF) or 80

    def _changed(self, signum, frame) -> None:
        try:
            os.write(self._write, b"w")
        except OSError:
            pass            # full: a notice is waiting already

    def __enter__(self) -> "WindowSize":
        self.fd, self._write = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write, False)
        self._previous = signal.signal(signal.SIGWINCH, self._changed)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGWINCH, self._previous or signal.SIG_DFL)
        os.close(self.fd)
        os.close(self._write)
        self.fd = self._write = -1


class SerialConsole(ConsoleLog):
    def __init__(self, stream=None, keep_lines: int = 20):
        super().__init__(keep_lines)
        self._stream = stream or sys.stdout.buffer
        self._escape = False
        self.interactive = False

    # --- output -------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self._stream.write(data)
        super().write(data)

    def flush(self) -> None:
        self._stream.flush()

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
