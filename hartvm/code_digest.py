"""Has hartvm's code changed? One digest of its sources, for everything that
must not outlive the code that made it: numba's compiled code (cpu/), the
booted snapshots of the default guest and the run pool (vmm/).

The digest covers the names and contents of the package's ``.py``, ``.sh`` and
``.script`` files under a directory, and hartvm's version: an edit, a reinstall
of other code or a new version gives a new digest, while touching a file
without changing it does not. Only the standard library is imported, so
that ``hartvm run``'s client stays light.
"""

import hashlib
from pathlib import Path

from . import __version__

PACKAGE = Path(__file__).resolve().parent
SUFFIXES = (".py", ".sh", ".script")


def code_digest(directory: Path = PACKAGE, salt: str = "") -> str:
    """A hex digest of the hartvm sources under ``directory`` (and of ``salt``)."""
    digest = hashlib.sha256(f"{__version__}\0{salt}\0".encode())
    for path in sorted(directory.rglob("*")):
        if path.suffix in SUFFIXES and "__pycache__" not in path.parts:
            digest.update(f"{path.relative_to(directory)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
