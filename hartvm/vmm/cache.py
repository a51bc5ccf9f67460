"""Booted snapshots of the default guest, so that a VM starts in milliseconds.

The first VM of a given size boots Debian's kernel (about 0.6 billion
instructions, a few seconds) and saves itself, between commands, in
``$XDG_CACHE_HOME/hartvm/snapshots/<key>``; later VMs restore that snapshot
(see ``VM.restore``: new identity, fresh entropy, current time). The key
covers everything the booted state depends on: the guest's files (kernel,
firmware, initramfs), hartvm's own source, RAM size and hart count. A
change to any of them makes a new key; snapshots of other guests or other
hartvm versions are removed then.
"""

import hashlib
import shutil
from pathlib import Path

from .. import __version__
from ..errors import HartvmError

PACKAGE = Path(__file__).resolve().parent.parent


def source_digest() -> str:
    """A digest of hartvm's own code (names, sizes and modification times of its
    files: any edit or reinstall changes it): a snapshot is valid only for the
    code that saved it."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix in (".py", ".sh") and "__pycache__" not in path.parts:
            stat = path.stat()
            digest.update(f"{path.relative_to(PACKAGE)}\0{stat.st_size}\0"
                          f"{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def booted_snapshot(memory: int, harts: int, progress: bool = True) -> Path:
    """The snapshot of the default guest booted with ``memory`` bytes and ``harts``
    harts, made now if there is none yet."""
    # Imported here: source_digest() alone must stay light (the run pool's clients use it).
    from ..guest import debian, rootfs
    from .vm import VM

    guest = debian.default_guest(progress=progress)
    initrd = rootfs.default_initramfs(guest)
    guest_key = hashlib.sha256(source_digest().encode())
    for path in (guest.kernel, guest.firmware, initrd):
        stat = path.stat()
        guest_key.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    prefix = guest_key.hexdigest()[:16]
    directory = debian.cache_root() / "snapshots"
    path = directory / f"{prefix}-{memory >> 20}M-{harts}"
    if (path / "state").exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    with VM(memory=memory, smp=harts, progress=progress, boot=True) as vm:
        try:
            vm.snapshot(path)
        except HartvmError:
            if not (path / "state").exists():   # else another hartvm saved it first
                raise
    for old in directory.iterdir():
        if not old.name.startswith(prefix) and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    return path
