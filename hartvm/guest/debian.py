"""Fetching the default guest's files from Debian trixie (riscv64) through apt.

The default guest is made of three Debian packages: ``opensbi`` (the M-mode
firmware), the kernel package that ``linux-image-riscv64`` depends on (the
kernel Image and its modules) and ``busybox-static`` (the guest's userland).
They are downloaded with the host's own ``apt-get``, so they come from the
mirror the host is configured with and go through apt's signature checks
(signed ``InRelease`` -> ``Packages`` hashes -> ``.deb`` hashes).

apt runs with a private configuration under the cache directory (apt.py),
so the host's apt state is neither used nor modified; only the host's
mirror, its keyring and its proxy settings are taken from the host
(sources.py). The files are read out of the .deb archives by deb.py.

Layout of the cache (``$XDG_CACHE_HOME/hartvm``, default ``~/.cache/hartvm``,
see hartvm/paths.py)::

    debian/trixie-riscv64/
        apt/                          private apt configuration and state
        opensbi_1.6-1_all.deb         downloaded packages, as apt names them
        opensbi_1.6-1_all/            files extracted from that package
        ...

Downloaded packages are reused as they are: ``fetch`` only calls apt for the
packages it does not have yet. The package index is refreshed when it is
older than a week (or when the host's mirror changes), so a new kernel
reaches the cache after a Debian point release; an offline host keeps using
the index and packages it already has.
"""

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..paths import cache_home
from ..errors import HartvmError
from .apt import ARCH, SUITE, Apt, lock_file
from .deb import extract_members, member_name
from .sources import HINT

KERNEL_METAPACKAGE = "linux-image-riscv64"
FIRMWARE_PACKAGE = "opensbi"
BUSYBOX_PACKAGE = "busybox-static"

# Paths inside the packages (without the leading "./" of the data archive).
# Debian moved everything to /usr in trixie ("merged /usr"), older releases
# shipped /bin and /lib: both spellings are accepted.
FIRMWARE_GLOB = "usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"
KERNEL_GLOBS = ("boot/vmlinux-*", "boot/vmlinuz-*")
MODULES_GLOBS = ("usr/lib/modules/*", "lib/modules/*")
BUSYBOX_GLOBS = ("usr/bin/busybox", "bin/busybox")


@dataclass(frozen=True)
class GuestFiles:
    """The files of the default guest, all inside the cache directory."""

    firmware: Path      # OpenSBI fw_dynamic.bin for the generic platform
    kernel: Path        # the Linux Image a bootloader loads (uncompressed)
    modules_dir: Path   # the kernel's /lib/modules/<version> directory
    busybox: Path       # statically linked busybox


# --- Public API --------------------------------------------------------------

def cache_root() -> Path:
    """``$XDG_CACHE_HOME/hartvm``, or ``~/.cache/hartvm``."""
    return cache_home()


def package_dir(root: Path | None = None) -> Path:
    """The directory that holds the downloaded trixie riscv64 packages."""
    return Path(root or cache_root()) / "debian" / f"{SUITE}-{ARCH}"


def fetch(packages: list[str], progress: bool = True,
          root: Path | None = None) -> dict[str, Path]:
    """Download the ``.deb`` of each package (not their dependencies).

    Returns {package name: path of its .deb}. Packages already in the cache
    are reused without calling apt at all.
    """
    apt = Apt(package_dir(root), progress)
    with apt.locked():
        found = {name: apt.cached_deb(name) for name in dict.fromkeys(packages)}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            found.update(apt.download(missing))
    return found


def resolve_kernel_package(progress: bool = True, root: Path | None = None) -> str:
    """The kernel image package that ``linux-image-riscv64`` depends on.

    For example ``linux-image-6.12.117+deb13-riscv64``; read from the
    (private) package index, which is downloaded if needed.
    """
    apt = Apt(package_dir(root), progress)
    with apt.locked():
        apt.ensure_index()
        # apt-cache takes half a second: keep its answer while the index is the same.
        indexes = sorted((apt.apt_dir / "state" / "lists").glob("*_Packages*"))
        index_key = [[p.name, p.stat().st_mtime_ns] for p in indexes]
        answer = apt.apt_dir / "kernel-package.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            saved = json.loads(answer.read_text())
            if saved["index"] == index_key:
                return saved["package"]
        record = apt.show([KERNEL_METAPACKAGE])[KERNEL_METAPACKAGE]
        package = _kernel_dependency(record)
        answer.write_text(json.dumps({"index": index_key, "package": package}))
    return package


def _kernel_dependency(record: dict[str, str]) -> str:
    # Depends: linux-image-6.12.117+deb13-riscv64 (= 6.12.117-1)
    for alternatives in record.get("Depends", "").split(","):
        for dependency in alternatives.split("|"):
            name = dependency.split("(")[0].split(":")[0].strip()
            if name.startswith("linux-image-") and name != KERNEL_METAPACKAGE:
                return name
    raise HartvmError(f"the Debian package {KERNEL_METAPACKAGE} does not depend on a "
                      f"linux-image package (Depends: {record.get('Depends', '')!r}); {HINT}")


def extract(deb_path, member_glob) -> list[Path]:
    """Extract the files of a .deb whose paths match ``member_glob``.

    ``member_glob`` is an fnmatch pattern on the path inside the package
    (``usr/bin/busybox``, ``boot/vmlinux-*``; ``*`` also matches ``/``), or
    a list of them. Files go to a directory next to the .deb named after it
    (``foo_1.0_all.deb`` -> ``foo_1.0_all/usr/bin/...``); the extracted paths
    are returned. A second call with the same patterns does not unpack again.
    """
    deb = Path(deb_path)
    patterns = [member_glob] if isinstance(member_glob, str) else list(member_glob)
    patterns = [member_name(p) for p in patterns]
    dest = deb.parent / deb.name.removesuffix(".deb")
    try:
        stat = deb.stat()
    except OSError as e:
        raise HartvmError(f"cannot read the Debian package {deb}: {e.strerror}") from None
    # The marker remembers what these patterns extracted from this very file
    # (size and mtime), so that re-runs skip decompressing the archive again.
    key = hashlib.sha256(json.dumps([patterns, stat.st_size, stat.st_mtime_ns])
                         .encode()).hexdigest()[:16]
    marker = dest / f".extracted-{key}.json"
    with lock_file(deb.parent / ".lock"):
        with contextlib.suppress(OSError, ValueError):
            paths = [dest / name for name in json.loads(marker.read_text())]
            if all(os.path.lexists(p) for p in paths):
                return paths
        try:
            dest.mkdir(parents=True, exist_ok=True)
            names = extract_members(deb, patterns, dest)
            marker.write_text(json.dumps(names))
        except (OSError, tarfile.TarError) as e:
            raise HartvmError(f"cannot extract {deb}: {e}") from None
    return [dest / name for name in names]


def opensbi_firmware(progress: bool = True, root: Path | None = None) -> Path:
    """OpenSBI's ``fw_dynamic.bin`` alone (``--bios default``), without the kernel."""
    deb = fetch([FIRMWARE_PACKAGE], progress, root)[FIRMWARE_PACKAGE]
    return _one(extract(deb, FIRMWARE_GLOB), FIRMWARE_PACKAGE, FIRMWARE_GLOB)


def default_guest(progress: bool = True, root: Path | None = None) -> GuestFiles:
    """Fetch (first time only) and extract the default guest's files."""
    kernel_package = resolve_kernel_package(progress, root)
    debs = fetch([FIRMWARE_PACKAGE, kernel_package, BUSYBOX_PACKAGE], progress, root)

    firmware = opensbi_firmware(progress, root)
    busybox = _one(extract(debs[BUSYBOX_PACKAGE], BUSYBOX_GLOBS),
                   BUSYBOX_PACKAGE, "bin/busybox")

    # The kernel package is large (about 110 MB): extract the image and the
    # modules in one pass over its data archive.
    extracted = extract(debs[kernel_package], KERNEL_GLOBS + MODULES_GLOBS)
    kernel = _one([p for p in extracted if p.is_file() and p.parent.name == "boot"],
                  kernel_package, "boot/vmlinux-*")
    version = kernel.name.split("-", 1)[1]
    modules = [p for p in extracted if p.is_dir() and p.name == version
               and p.parent.name == "modules"]
    modules_dir = _one(modules, kernel_package, f"lib/modules/{version}")
    return GuestFiles(firmware=firmware, kernel=_bootable_image(kernel, kernel_package),
                      modules_dir=modules_dir, busybox=busybox)


# --- Helpers -----------------------------------------------------------------

def _one(paths: list[Path], package: str, what: str) -> Path:
    files = sorted(set(paths))
    if not files:
        raise HartvmError(f"the Debian package {package} has no {what}; {HINT}")
    return files[-1]


def _bootable_image(kernel: Path, package: str) -> Path:
    """The kernel file a bootloader loads: a RISC-V Linux ``Image``.

    Debian's riscv64 kernel is an uncompressed Image (with an EFI stub, so it
    also starts with "MZ"). Should a package ship a gzip-compressed Image,
    a decompressed copy is written next to it, since on RISC-V it is the
    bootloader that decompresses the kernel.
    """
    with open(kernel, "rb") as f:
        head = f.read(64)
    if head[:2] == b"\x1f\x8b":
        image = kernel.with_name("Image-" + kernel.name.split("-", 1)[1])
        if not image.exists():
            partial = image.with_name(image.name + ".partial")
            with gzip.open(kernel, "rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(partial, image)
        kernel = image
        with open(kernel, "rb") as f:
            head = f.read(64)
    # The RISC-V boot image header has the magic "RSC\x05" at offset 0x38
    # (Documentation/arch/riscv/boot-image-header.rst).
    if head[0x38:0x3C] != b"RSC\x05":
        raise HartvmError(f"{kernel} (from {package}) is not a RISC-V Linux Image; {HINT}")
    return kernel
