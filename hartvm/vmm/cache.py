"""Where the booted snapshots of the default guest live, and under what key.

The first VM of a given size boots Debian's kernel (about 0.6 billion
instructions, a few seconds) and saves itself, between commands, in
``$XDG_CACHE_HOME/hartvm/snapshots/<key>`` (``VM`` does the booting and
saving); later VMs restore that snapshot. The key covers everything the
booted state depends on: the guest's files (kernel, firmware, initramfs),
hartvm's own code (code_digest.py), RAM size and hart count. A change to
any of them makes a new key; ``prune`` then removes snapshots of other
guests or other hartvm versions. This module only computes keys and paths.
"""

import hashlib
import shutil
from pathlib import Path

from .. import paths
from ..code_digest import code_digest
from .snapshot import STATE_FILE


def snapshots_dir() -> Path:
    return paths.cache_home() / "snapshots"


def _prefix(guest_files) -> str:
    key = hashlib.sha256(code_digest().encode())
    for path in guest_files:
        stat = Path(path).stat()
        key.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return key.hexdigest()[:16]


def booted_snapshot_path(guest_files, memory: int, harts: int, image: str = "busybox",
                         image_key: str = "") -> Path:
    """The snapshot of the guest made of ``guest_files`` (kernel, firmware,
    initramfs) and the image named ``image`` (whose build is ``image_key``),
    booted with ``memory`` bytes and ``harts`` harts."""
    image_hash = hashlib.sha256(image_key.encode()).hexdigest()[:8]
    return snapshots_dir() / f"{_prefix(guest_files)}-{memory >> 20}M-{harts}-{image_hash}-{image}"


def is_complete(path: Path) -> bool:
    return (path / STATE_FILE).exists()


def prune(keep: Path) -> None:
    """Remove the snapshots of other guests or other code than ``keep``'s, and
    those of other builds of ``keep``'s image."""
    prefix, _memory, _harts, image_hash, image = keep.name.split("-", 4)
    for old in keep.parent.iterdir():
        parts = old.name.split("-", 4)
        if old.name.startswith(".") or len(parts) != 5:
            continue
        if parts[0] != prefix or (parts[4] == image and parts[3] != image_hash):
            shutil.rmtree(old, ignore_errors=True)
