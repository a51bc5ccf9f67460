"""The default guest's initramfs: busybox, the virtio drivers, /init and the agent.

Built from Debian's files (see debian.py) into a newc cpio and kept in the
cache directory under a name derived from everything that went into it, so
it is built once per guest and hartvm version.

Debian's kernel has the virtio core, virtio_ring and virtio_console built
in; the rest are modules, compressed with xz, without modules.dep. The
lists below are in load order (dependencies first). Busybox's ``insmod``
loads them; the disk filesystem ones only when the guest has a disk, the
9p ones only when it has a virtio-9p device.
"""

import hashlib
import importlib.resources
import lzma
import os
import re
from pathlib import Path

from ..errors import HartvmError
from .debian import GuestFiles, cache_root
from .initramfs import Initramfs

BOOT_MODULES = [
    "kernel/drivers/block/virtio_blk.ko.xz",
    "kernel/drivers/char/hw_random/virtio-rng.ko.xz",
    "kernel/drivers/virtio/virtio_mmio.ko.xz",
]
DISK_MODULES = [
    "kernel/lib/crc16.ko.xz",
    "kernel/crypto/crc32c_generic.ko.xz",
    "kernel/fs/mbcache.ko.xz",
    "kernel/fs/jbd2/jbd2.ko.xz",
    "kernel/fs/ext4/ext4.ko.xz",
]
# Shared folders (devices/virtio/p9.py), loaded when the board has the 9p
# device: netfs, then the 9P client, its virtio transport and the filesystem.
P9_MODULES = [
    "kernel/fs/netfs/netfs.ko.xz",
    "kernel/net/9p/9pnet.ko.xz",
    "kernel/net/9p/9pnet_virtio.ko.xz",
    "kernel/fs/9p/9p.ko.xz",
]
# The network card (devices/virtio/net.py), loaded when the board has one:
# virtio_net needs the failover modules first.
NET_MODULES = [
    "kernel/net/core/failover.ko.xz",
    "kernel/drivers/net/net_failover.ko.xz",
    "kernel/drivers/net/virtio_net.ko.xz",
]
APPLET_NAME = re.compile(rb"\[|\[\[|[a-z0-9][a-z0-9_.\-]*")
SIGNATURE_MARKER = b"~Module signature appended~\n"
FORMAT = 4          # bump when the layout below changes


def _script(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath(name).read_bytes()


def build(guest: GuestFiles) -> bytes:
    """The initramfs image of the default guest."""
    fs = Initramfs()
    for directory in ("bin", "usr", "lib", "lib/modules", "dev", "proc", "sys", "tmp",
                      "run", "root", "etc", "mnt"):
        fs.directory(directory)
    # Merged /usr, as in Debian: every program is in /bin.
    fs.symlink("sbin", "bin").symlink("usr/bin", "../bin").symlink("usr/sbin", "../bin")
    fs.char_device("dev/console", 5, 1).char_device("dev/null", 1, 3, 0o666)
    busybox = guest.busybox.read_bytes()
    fs.file("bin/busybox", busybox, 0o755)
    for applet in busybox_applets(busybox):
        if applet != "busybox":
            fs.symlink(f"bin/{applet}", "busybox")
    fs.file("init", _script("init.sh"), 0o755)
    fs.directory("lib/hartvm").file("lib/hartvm/agent", _script("agent.sh"), 0o755)
    fs.file("lib/hartvm/udhcpc", _script("udhcpc.script"), 0o755)
    # init.sh finds busybox beside the agent (an image's root has its own /bin).
    fs.symlink("lib/hartvm/busybox", "../../bin/busybox")
    fs.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    fs.file("etc/group", b"root:x:0:\n")
    for list_name, modules in (("boot", BOOT_MODULES), ("disk", DISK_MODULES),
                               ("9p", P9_MODULES), ("net", NET_MODULES)):
        names = []
        for module in modules:
            path = guest.modules_dir / module
            try:
                data = lzma.decompress(path.read_bytes())
            except (OSError, lzma.LZMAError) as error:
                raise HartvmError(f"kernel module {path}: {error}") from None
            name = Path(module).name.removesuffix(".xz")
            fs.file(f"lib/modules/{name}", strip_signature(data))
            names.append(name)
        fs.file(f"lib/modules/{list_name}", " ".join(names).encode() + b"\n")
    return fs.build()


def busybox_applets(binary: bytes) -> list[str]:
    """The applet names compiled into a busybox binary: its sorted table of
    NUL-terminated names, which starts with "[" and "[[" (empty if not found)."""
    start = binary.find(b"[\0[[\0")
    names: list[str] = []
    if start < 0:
        return names
    for name in binary[start:start + 65536].split(b"\0"):
        if not APPLET_NAME.fullmatch(name) or (names and name.decode() <= names[-1]):
            break
        names.append(name.decode())
    return names


def strip_signature(module: bytes) -> bytes:
    """A kernel module without its appended signature (struct module_signature,
    include/linux/module_signature.h: 12 bytes ending with the big-endian
    signature length, then the marker). Verifying the RSA signature costs the
    guest about 50 million instructions per module; the kernel loads unsigned
    modules (and notes it as a taint)."""
    if not module.endswith(SIGNATURE_MARKER):
        return module
    end = len(module) - len(SIGNATURE_MARKER)
    signature_length = int.from_bytes(module[end - 4:end], "big")
    start = end - 12 - signature_length
    return module[:start] if start > 0 else module


def default_initramfs(guest: GuestFiles, root: Path | None = None) -> Path:
    """The cached initramfs for ``guest`` (built on first use)."""
    key = hashlib.sha256()
    key.update(f"{FORMAT}\0{guest.busybox}\0{guest.modules_dir}\0".encode())
    for path in (guest.busybox, guest.modules_dir):
        stat = path.stat()
        key.update(f"{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    for name in ("init.sh", "agent.sh", "udhcpc.script"):
        key.update(_script(name))
    directory = Path(root or cache_root()) / "initramfs"
    path = directory / f"hartvm-{key.hexdigest()[:16]}.cpio"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_bytes(build(guest))
    os.replace(temporary, path)
    for old in directory.glob("hartvm-*.cpio"):
        if old != path:
            old.unlink(missing_ok=True)
    return path
