"""Scratch directories that a killed hartvm must not leave behind for good.

A snapshot is staged in a hidden directory beside its destination, and a
restored or forked VM keeps its disk overlays in a directory of its own in
``$TMPDIR``. ``close()`` and the error paths remove them, but a process
killed with SIGKILL cannot. So each such directory carries the pid of the
process that made it (``<prefix><pid>-<random>``), and whoever makes a new
one first sweeps those of the same prefix whose process is gone. A pid
that was reused by another process only keeps a leftover a little longer.
"""

import os
import re
import shutil
import tempfile
from pathlib import Path


def make(prefix: str, parent=None) -> Path:
    """A new directory ``<parent>/<prefix><pid>-<random>``; sweeps dead ones first."""
    parent = Path(parent if parent is not None else tempfile.gettempdir())
    sweep(parent, prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def sweep(parent: Path, prefix: str) -> None:
    """Remove ``parent``'s directories of ``prefix`` whose process has ended
    (only this user's: another user's are not ours to judge)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)-[^/]+")
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
        except OSError:
            continue
        if not _alive(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True          # someone's process: alive
    return True
