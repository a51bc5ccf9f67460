"""What the guest printed on its serial console, kept for reports.

The last lines are kept (for the message when a run ends badly) and a Linux
kernel panic is noticed by the line the kernel prints at its end.

A report shows the guest's lines as the guest's: each behind a ``guest |``
mark, with control characters escaped (``\x1b`` for ESC), so that a guest
can neither drive the user's terminal with escape sequences nor print a
line that looks like one of hartvm's own.
"""

import collections

from ..errors import escape

PANIC_END = b"---[ end Kernel panic"
MAX_PARTIAL = 4096
MAX_MIRROR = 16 << 20     # console bytes a VM process keeps in its log file at most


class ConsoleLog:
    def __init__(self, keep_lines: int = 20):
        self._lines = collections.deque(maxlen=keep_lines)
        self._partial = bytearray()
        self.panicked = False
        self._mirror = None           # a file that gets the console too (a VM process's log)
        self._mirror_left = 0

    def mirror_to(self, path, limit: int = MAX_MIRROR) -> None:
        """Append the console from now on to the file ``path`` too, ``limit``
        bytes at most (a guest must not fill the host's disk)."""
        self._mirror = open(path, "ab", buffering=0)
        self._mirror_left = limit

    def write(self, data: bytes) -> None:
        if self._mirror is not None:
            self._write_mirror(data)
        self._partial.extend(data)
        while b"\n" in self._partial:
            line, _, rest = bytes(self._partial).partition(b"\n")
            self._lines.append(line.rstrip(b"\r"))
            self._partial = bytearray(rest)
            if PANIC_END in line:
                self.panicked = True
        if len(self._partial) > MAX_PARTIAL:  # a guest that never prints a newline
            self._lines.append(bytes(self._partial))
            self._partial.clear()

    def _write_mirror(self, data: bytes) -> None:
        try:
            if len(data) >= self._mirror_left:
                data = data[:self._mirror_left] + \
                    b"\n[hartvm: console log limit reached; the rest is not kept]\n"
                self._mirror.write(data)
                self._mirror.close()
                self._mirror = None
            else:
                self._mirror.write(data)
                self._mirror_left -= len(data)
        except OSError:
            self._mirror = None       # a full disk: the guest runs on without its log

    def last_lines(self) -> list[str]:
        lines = list(self._lines)
        if self._partial:
            lines.append(bytes(self._partial))
        return [line.decode("utf-8", "replace") for line in lines]

    def report(self, message: str, count: int = 10) -> str:
        """``message`` followed by the last ``count`` console lines, escaped."""
        lines = self.last_lines()[-count:]
        if not lines:
            return message
        return message + "\nlast console lines of the guest:\n" + \
            "\n".join("  guest | " + escape(line) for line in lines)
