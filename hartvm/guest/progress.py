"""A progress line on stderr for the downloads of the default guest (see apt.py)."""

import shutil
import sys


def format_size(n: int) -> str:
    """``1.5 MB`` or ``12 kB``: the size of a download, for people."""
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MB"
    return f"{n / 1024:.0f} kB"


class ProgressLine:
    """One line on stderr, rewritten in place; only when stderr is a terminal."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def update(self, percent: float):
        if not self.enabled:
            return
        percent = max(0.0, min(100.0, percent))
        text = f"hartvm: {self.label}: {percent:3.0f}%"
        if self.total:
            text += f" ({format_size(int(self.total * percent / 100))})"
        # Longer than the terminal, the line would wrap and "\r" would no
        # longer bring the cursor back to its start.
        width = shutil.get_terminal_size().columns - 1
        sys.stderr.write("\r" + text[:width] + "\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def finish(self, ok: bool):
        if self.shown:
            if ok:
                self.update(100.0)
                sys.stderr.write("\n")
            else:
                sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False
