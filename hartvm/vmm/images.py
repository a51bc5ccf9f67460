"""Guest images: which root filesystem a VM boots into, and how images are built.

Two kinds of image, both booted by the same kernel and initramfs:

- ``busybox``: the initramfs alone (guest/rootfs.py), the default.
- Debian root filesystem images: an ext4 file that the initramfs mounts
  and switches to (guest/init.sh). The stock ``debian`` is Debian trixie's
  riscv64 minbase with python3 and what a shell user expects
  (``bootstrap.DEBIAN_PACKAGES``); an image of one's own is another image
  plus packages (``hartvm image build NAME --from debian --packages gcc``),
  the way a two-line Dockerfile is.

Building happens on the host without root (guest/bootstrap.py: mmdebstrap
chrootless under fakeroot, the packages downloaded through hartvm's private
apt, mke2fs -d), then the packages whose scripts need the guest's own
programs are installed by ``apt-get`` inside a hartvm guest (``configure``):
the emulator configures its own images. The result is cached; ``debian`` is
built on first use, other images by ``hartvm image build``.

Images are read-only once built: every VM reads its image as the base of a
copy-on-write overlay of its own (devices/virtio/blk.py), so each run
starts from the same clean image. Layout, under ``$XDG_CACHE_HOME/hartvm``::

    images/NAME/rootfs.ext4    the image (sparse)
    images/NAME/image.json     how it was made: base, packages, size, date
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import HartvmError, quoted
from ..guest import bootstrap, debian
from ..guest.apt import Apt, lock_file
from ..guest.progress import ProgressLine, format_size
from . import scratch

BUSYBOX = "busybox"
DEBIAN = "debian"
FORMAT = 1                      # of image.json; images of another format are built again
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+\Z")      # Debian policy 5.6.1
MIN_SIZE = 2 << 30              # an image's filesystem: room for what users install
CONFIGURE_MEMORY = "1G"         # the guest that installs the packages
ROOTFS = "rootfs.ext4"
INFO = "image.json"


@dataclass(frozen=True)
class Image:
    """A guest image: ``rootfs`` is None for the busybox initramfs guest."""
    name: str
    rootfs: Path | None
    info: dict

    @property
    def key(self) -> str:
        """What a booted snapshot of this image depends on."""
        if self.rootfs is None:
            return self.name
        stat = self.rootfs.stat()
        return f"{self.name}:{stat.st_size}:{stat.st_mtime_ns}"


def images_dir() -> Path:
    return paths.cache_home() / "images"


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise HartvmError(f"bad image name {quoted(name)}: use 1 to 64 lowercase letters, digits, "
                          f"'.', '_' and '-', starting with a letter or digit")
    return name


def _built(name: str) -> Image | None:
    directory = images_dir() / name
    try:
        info = json.loads((directory / INFO).read_text())
    except (OSError, ValueError):
        return None
    rootfs = directory / ROOTFS
    if not isinstance(info, dict) or info.get("format") != FORMAT or not rootfs.is_file():
        return None
    return Image(name, rootfs, info)


def find(name: str, progress: bool = True, vm_class=None) -> Image:
    """The image ``name``; ``debian`` is built the first time it is asked for,
    in a guest of ``vm_class`` (vm.VM, given by its caller: this module is
    below the VM)."""
    check_name(name)
    if name == BUSYBOX:
        return Image(BUSYBOX, None, {"name": BUSYBOX})
    image = _built(name)
    if image is not None:
        return image
    if name == DEBIAN and vm_class is not None:
        return build(DEBIAN, vm_class, progress=progress)
    raise HartvmError(f"no image named {quoted(name)}; build one with "
                      f"`hartvm image build {name} --from debian --packages ...`")


def is_built(name: str) -> bool:
    """True for busybox and for images that are built."""
    return check_name(name) == BUSYBOX or _built(name) is not None


def list_images() -> list[Image]:
    """busybox, then every built image, by name."""
    images = [find(BUSYBOX)]     # built in
    directory = images_dir()
    if directory.is_dir():
        for entry in sorted(directory.iterdir()):
            image = _built(entry.name) if NAME.match(entry.name) else None
            if image is not None:
                images.append(image)
    return images


def remove(name: str) -> None:
    check_name(name)
    if name == BUSYBOX:
        raise HartvmError("busybox is built into hartvm; it cannot be removed")
    directory = images_dir() / name
    if not directory.exists():
        raise HartvmError(f"no image named {quoted(name)}")
    with _locked():
        shutil.rmtree(directory)


def check_packages(packages) -> list[str]:
    packages = list(packages)
    for package in packages:
        if not isinstance(package, str) or not PACKAGE.match(package):
            raise HartvmError(f"bad Debian package name {quoted(package)}")
    return packages


@contextlib.contextmanager
def _locked():
    """One build at a time per cache: two would download and configure twice."""
    images_dir().mkdir(parents=True, exist_ok=True)
    with lock_file(images_dir() / ".lock"):
        yield


def build(name: str, vm_class, base: str | None = None, packages=(),
          progress: bool = True) -> Image:
    """Build (or build again) image ``name``: ``base`` (an image name; None for
    Debian's minbase) plus ``packages`` and their dependencies, configured
    in a guest of ``vm_class`` (vm.VM). ``debian`` itself is minbase plus
    DEBIAN_PACKAGES."""
    check_name(name)
    packages = check_packages(packages)
    if name == BUSYBOX:
        raise HartvmError("busybox is built into hartvm; name your image otherwise")
    if base == BUSYBOX:
        raise HartvmError("an image is built from a Debian image (such as debian), "
                          "not from busybox, which has no package manager")
    if name == DEBIAN and base is None and not packages:
        packages = list(bootstrap.DEBIAN_PACKAGES)
    if base is None and name != DEBIAN:
        base = DEBIAN
    if base == name:
        raise HartvmError(f"image {quoted(name)} cannot be built from itself")
    base_image = find(base, progress, vm_class) if base is not None else None
    if not packages:
        raise HartvmError("name the packages to add with --packages P1,P2,...")
    bootstrap.check_tools()
    started = time.monotonic()
    with _locked():
        work = scratch.make(f".build-{name}-", images_dir())
        try:
            rootfs = work / ROOTFS
            debs = work / "debs"
            apt = Apt(debian.package_dir(), progress)
            if base_image is None:
                _say(progress, f"bootstrapping Debian {bootstrap.SUITE} minbase with mmdebstrap")
                tree, state = work / "tree", work / "fakeroot.state"
                bootstrap.bootstrap(tree, state)
                found = bootstrap.download(apt, tree / "var/lib/dpkg/status", packages, debs)
                package_bytes = sum(deb.stat().st_size for deb in found)
                size = _size(bootstrap.tree_size(tree), package_bytes)
                bootstrap.pack(tree, rootfs, size, state)
                shutil.rmtree(tree)
            else:
                _copy_sparse(base_image.rootfs, rootfs)
                bootstrap.dump(rootfs, "/var/lib/dpkg/status", work / "status")
                found = bootstrap.download(apt, work / "status", packages, debs)
                package_bytes = sum(deb.stat().st_size for deb in found)
                size = _size(used_bytes(rootfs), package_bytes)
                if size > rootfs.stat().st_size:
                    bootstrap.grow(rootfs, size)
            bootstrap.pack(debs, work / "debs.ext4", package_bytes + package_bytes // 4 + (64 << 20))
            configure(vm_class, rootfs, work / "debs.ext4", packages, len(found), progress)
            os.chmod(rootfs, 0o444)
            info = {"format": FORMAT, "name": name, "base": base, "packages": packages,
                    "size": rootfs.stat().st_size, "built": int(time.time()),
                    "build_seconds": round(time.monotonic() - started, 1)}
            (work / INFO).write_text(json.dumps(info, indent=1) + "\n")
            for leftover in ("debs", "debs.ext4", "status", "fakeroot.state"):
                path = work / leftover
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            target = images_dir() / name
            if target.exists():
                shutil.rmtree(target)
            os.rename(work, target)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    image = _built(name)
    _say(progress, f"built image {name} in {time.monotonic() - started:.0f} s "
                   f"({format_size(used_bytes(image.rootfs))} used)")
    return image


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"hartvm: {text}", file=sys.stderr, flush=True)


def _size(used: int, package_bytes: int) -> int:
    """An image's size: what it holds now, room for the packages to unpack
    (about four times their archives), rounded up to 256 MiB, at least MIN_SIZE."""
    need = used + 4 * package_bytes + (256 << 20)
    return max(MIN_SIZE, -(-need // (256 << 20)) * (256 << 20))


def used_bytes(image: Path) -> int:
    """The host disk space an image takes (it is sparse)."""
    return image.stat().st_blocks * 512


def _copy_sparse(source: Path, destination: Path) -> None:
    """A copy that keeps holes as holes (and shares blocks where the host's
    filesystem can): an image is mostly holes."""
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(source), str(destination)],
                   check=True)
    os.chmod(destination, 0o644)


# The script that installs the packages inside the guest: the image is
# /dev/vda, the packages (a flat repository, see bootstrap.download) /dev/vdb.
# apt resolves, orders and configures as it would from the mirror; its
# sources and lists for this step live on the packages' disk, thrown away
# after, so the image's own apt configuration is untouched.
CONFIGURE_SCRIPT = r"""
set -e
mount -t ext4 /dev/vda /mnt
mkdir -p /mnt/tmp/hartvm-packages
mount -t ext4 /dev/vdb /mnt/tmp/hartvm-packages
for fs in proc sys dev; do mount -o bind /$fs /mnt/$fs; done
status=0
chroot /mnt /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive sh -ec '
    cd /tmp/hartvm-packages
    echo "deb [trusted=yes] file:/tmp/hartvm-packages ./" > sources.list
    mkdir -p lists/partial
    set -- -o Dir::Etc::SourceList=/tmp/hartvm-packages/sources.list \
        -o Dir::Etc::SourceParts=/nonexistent -o Dir::State::Lists=/tmp/hartvm-packages/lists \
        -o APT::Install-Recommends=false -o Dpkg::Use-Pty=false
    apt-get "$@" -q update
    apt-get "$@" -q -y install @PACKAGES@' || status=$?
for fs in dev sys proc tmp/hartvm-packages; do umount /mnt/$fs; done
rmdir /mnt/tmp/hartvm-packages
umount /mnt
sync
exit $status
"""


def configure(vm_class, rootfs: Path, packages_disk: Path, packages: list[str], count: int,
              progress: bool) -> None:
    """Install ``packages`` (``count`` files on ``packages_disk``) into the image
    ``rootfs``, inside a busybox guest of ``vm_class``; apt's output is shown
    if it fails."""
    script = CONFIGURE_SCRIPT.replace("@PACKAGES@", " ".join(packages))   # names checked
    bar = ProgressLine(f"installing {count} packages in a hartvm guest", 0) if progress else None
    log = bytearray()
    done = 0

    def output(data: bytes) -> None:
        nonlocal done
        log.extend(data)
        done += data.count(b"Setting up ")
        if bar:
            bar.update(100.0 * min(done, count) / max(count, 1))

    try:
        with vm_class(memory=CONFIGURE_MEMORY, drives=[str(rootfs), str(packages_disk)],
                progress=progress) as vm:
            result = vm.run(["sh", "-c", script], stdout=output, stderr=output)
    except BaseException:
        if bar:
            bar.finish(ok=False)
        raise
    if bar:
        bar.finish(ok=result.returncode == 0)
    if result.returncode != 0:
        tail = log.decode(errors="replace").splitlines()[-30:]
        print("\n".join(f"  {line}" for line in tail), file=sys.stderr)
        errors = [line for line in tail if line.startswith("E:")]
        raise HartvmError("installing the packages in the guest failed"
                          + (f" ({errors[-1]})" if errors else ""))
    bootstrap.check_filesystem(rootfs)
