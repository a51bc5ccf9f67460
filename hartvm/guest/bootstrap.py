"""The host's half of building a Debian root filesystem image, without root.

An image is made in three steps; the first two run here, on the host, as
the user, with Debian's own tools, and never touch the host's apt, dpkg or
``/var/lib``:

1. ``bootstrap``: ``mmdebstrap --mode=chrootless --variant=minbase`` under
   ``fakeroot`` unpacks and configures Debian trixie's riscv64 minbase into a
   directory. Chrootless mode runs dpkg with ``--root`` and the maintainer
   scripts of the essential set on the host with ``DPKG_ROOT`` set (they
   are written for it), so no riscv64 code runs here and no qemu-user is
   needed. fakeroot records the owners and device nodes, and its state file
   carries them to step 3's ``mke2fs``.
2. ``download``: the packages asked for, with every dependency that the
   tree does not have yet, are downloaded through hartvm's private apt
   (apt.py: the host's mirror and keyring, apt's signature checks) against
   the tree's own dpkg status, and packed into an ext4 image of their own.
   Their maintainer scripts need the guest's binaries (python3's byte-
   compiles its library with python3), so they are installed later, inside
   a hartvm guest, by ``apt-get install`` from these files (vmm/images.py).
3. ``pack``: ``mke2fs -d`` from e2fsprogs writes the tree into an ext4 image,
   sparse on the host, without mounting anything.

``dump`` reads one file of an image back with ``debugfs`` (for an image
built from another one, step 2 needs the dpkg status of that image).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

from ..errors import HartvmError
from .apt import ARCH, COMPONENT, SUITE, Apt
from .sources import host_mirror, host_proxy_settings, parse_fields

# The packages of the stock "debian" image, beyond minbase: what a shell user
# expects (issue 11), and e2fsprogs so that the guest can grow its root
# filesystem to the disk it is given (--disk-size).
DEBIAN_PACKAGES = ("python3", "bash", "coreutils", "procps", "ca-certificates", "less",
                   "e2fsprogs")
TOOLS = {"mmdebstrap": "mmdebstrap", "fakeroot": "fakeroot", "mke2fs": "e2fsprogs",
         "e2fsck": "e2fsprogs", "debugfs": "e2fsprogs", "resize2fs": "e2fsprogs"}


def check_tools() -> None:
    """One line naming the Debian packages to install, if any tool is missing."""
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None
                      and shutil.which(tool, path="/usr/sbin:/sbin") is None})
    if missing:
        raise HartvmError(f"building a Debian image needs the Debian packages "
                          f"{', '.join(missing)} (sudo apt-get install {' '.join(missing)})")


def _tool(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name


def _run(argv: list[str], what: str, env: dict | None = None) -> None:
    """Run a build tool quietly; its output is shown only when it fails."""
    with tempfile.TemporaryFile() as out:
        try:
            code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, env=env).returncode
        except OSError as error:
            raise HartvmError(f"cannot run {argv[0]}: {error.strerror}") from None
        if code != 0:
            out.seek(0)
            lines = out.read().decode(errors="replace").splitlines()
            for line in lines[-30:]:
                print(f"  {line}", file=sys.stderr)
            errors = [line for line in lines if line.startswith("E:")]
            detail = f" ({errors[-1]})" if errors else ""
            raise HartvmError(f"{what} failed{detail}")


def bootstrap(tree: Path, fakeroot_state: Path) -> None:
    """Debian trixie riscv64 minbase, unpacked and configured into ``tree``
    (which must not exist), its owners recorded in ``fakeroot_state``."""
    uri, signed_by = host_mirror()
    if signed_by.startswith("-----BEGIN") or "\n" in signed_by:
        # An inline key block in the host's sources: apt reads armored keys
        # from a file named *.asc.
        keyring = tree.parent / "host-keyring.asc"
        keyring.write_text(signed_by.strip() + "\n")
        signed_by = str(keyring)
    options = [f"[signed-by={signed_by}]"] if signed_by else []
    source = " ".join(["deb", *options, uri, SUITE, COMPONENT])
    argv = [_tool("fakeroot"), "-s", str(fakeroot_state), "--",
            _tool("mmdebstrap"), "--quiet", "--mode=chrootless", "--variant=minbase",
            f"--architectures={ARCH}", "--aptopt=Acquire::Languages \"none\"",
            *(f"--aptopt={line}" for line in host_proxy_settings()),
            SUITE, str(tree), source]
    env = dict(os.environ, LC_ALL="C")
    _run(argv, f"mmdebstrap of Debian {SUITE} {ARCH}", env)


def download(apt: Apt, status: Path, packages: list[str], destination: Path) -> list[Path]:
    """Download ``packages`` and the dependencies that a system whose dpkg
    status file is ``status`` lacks, into ``destination``; their paths."""
    (destination / "partial").mkdir(parents=True, exist_ok=True)
    options = ["-o", f"Dir::State::status={status}",
               "-o", f"Dir::Cache::archives={destination}/",
               "-o", "APT::Install-Recommends=false",
               "-o", "Debug::NoLocking=true"]
    with apt.locked():
        apt.ensure_index()
        label = f"downloading {', '.join(packages)} from Debian {SUITE}"
        code, output = apt.run(["apt-get", "install", "--download-only", "--yes",
                                *options, *packages], label=label)
        if code != 0 and not apt.index_updated:
            apt.ensure_index(force=True)        # the index may name versions gone since
            code, output = apt.run(["apt-get", "install", "--download-only", "--yes",
                                    *options, *packages], label=label)
        if code != 0:
            apt.fail(f"cannot download {', '.join(packages)}", output)
        shutil.rmtree(destination / "partial", ignore_errors=True)
        (destination / "lock").unlink(missing_ok=True)
        debs = sorted(destination.glob("*.deb"))
        _write_index(apt, debs, destination / "Packages")
    return debs


def _write_index(apt: Apt, debs: list[Path], index: Path) -> None:
    """A flat repository index of ``debs``: their records from the signed
    index apt checked, with the file names of this directory. The guest's
    apt installs from it (``deb [trusted=yes] file:DIR ./``), resolving and
    ordering as it would from the mirror; the files were checked here."""
    wanted = {}
    for deb in debs:
        name, version, _arch = deb.stem.split("_")
        wanted[f"{name}={urllib.parse.unquote(version)}"] = deb.name
    code, output = apt.run(["apt-cache", "show", *wanted])
    if code != 0:
        apt.fail("apt-cache show failed", output)
    records = []
    for paragraph in output.strip().split("\n\n"):
        lines = paragraph.splitlines()
        fields = parse_fields(lines)
        key = f"{fields.get('Package')}={fields.get('Version')}"
        if key in wanted:
            records.append("\n".join(f"Filename: ./{wanted.pop(key)}"
                                     if line.startswith("Filename:") else line
                                     for line in lines))
    if wanted:
        raise HartvmError(f"apt's index has no record of {', '.join(sorted(wanted))}")
    index.write_text("\n\n".join(records) + "\n")


def pack(tree: Path, image: Path, size: int, fakeroot_state: Path | None = None,
         label: str = "hartvm") -> None:
    """An ext4 image of ``size`` bytes (sparse) holding ``tree``, with the owners
    and devices that ``fakeroot_state`` recorded (else all files the user's)."""
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(size)
    mke2fs = [_tool("mke2fs"), "-q", "-F", "-t", "ext4", "-L", label,
              # No reserved blocks: the guest's root is the only user of its disk.
              "-m", "0", "-d", str(tree), str(image)]
    if fakeroot_state is not None:
        mke2fs = [_tool("fakeroot"), "-i", str(fakeroot_state), "--", *mke2fs]
    _run(mke2fs, f"mke2fs of {image.name}")


def grow(image: Path, size: int) -> None:
    """Grow the ext4 ``image`` (not in use) to ``size`` bytes."""
    _run([_tool("e2fsck"), "-f", "-p", str(image)], f"e2fsck of {image.name}")
    with open(image, "r+b") as f:
        f.truncate(size)
    _run([_tool("resize2fs"), str(image)], f"resize2fs of {image.name}")


def check_filesystem(image: Path) -> None:
    """Fail unless ``e2fsck`` finds the ext4 ``image`` clean (it changes nothing)."""
    _run([_tool("e2fsck"), "-f", "-n", str(image)], f"e2fsck of {image.name}")


def dump(image: Path, guest_path: str, destination: Path) -> None:
    """Copy the file ``guest_path`` of the ext4 ``image`` to ``destination``."""
    destination.unlink(missing_ok=True)
    _run([_tool("debugfs"), "-R", f"dump {guest_path} {destination}", str(image)],
         f"debugfs of {image.name}")
    if not destination.exists():
        raise HartvmError(f"{image.name} has no {guest_path}")


def tree_size(directory: Path) -> int:
    """Bytes used by the files under ``directory`` (as ``du`` counts them)."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total

