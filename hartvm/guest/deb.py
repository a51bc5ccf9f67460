"""Reading .deb files without dpkg: the ar archive, and the files of its data.tar.

A .deb is an ar archive whose ``data.tar[.xz|.gz|.bz2|.zst]`` member holds
the package's files. They are streamed out of it by Python's tarfile, so
that the host needs no dpkg (only for zstd before Python 3.14, see
``extract_members``). ``debian.extract`` decides what to extract and where.
"""

import fnmatch
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from ..errors import HartvmError


def member_name(name: str) -> str:
    """A path inside a package without its leading "./" or "/"."""
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _ar_members(f):
    """(name, offset, size) of each member of an ar archive (a .deb)."""
    if f.read(8) != b"!<arch>\n":
        raise HartvmError(f"{f.name} is not a Debian package (no ar header)")
    while True:
        header = f.read(60)
        if len(header) < 60:
            return
        name = header[:16].decode("ascii", "replace").rstrip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip() or 0)
        offset = f.tell()
        yield name, offset, size
        f.seek(offset + size + (size & 1))   # members are 2-byte aligned


class _Slice(io.RawIOBase):
    """The bytes of one ar member, as a readable stream."""

    def __init__(self, f, offset: int, size: int):
        f.seek(offset)
        self._f, self._left = f, size

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._f.read(min(len(buffer), self._left))
        buffer[:len(data)] = data
        self._left -= len(data)
        return len(data)


def extract_members(deb: Path, patterns: list[str], dest: Path) -> list[str]:
    """Extract the members of ``deb``'s data archive that match; their names."""
    with open(deb, "rb") as f:
        data = next(((name, offset, size) for name, offset, size in _ar_members(f)
                     if name.startswith("data.tar")), None)
        if data is None:
            raise HartvmError(f"{deb} has no data.tar member")
        name, offset, size = data
        compression = name[len("data.tar"):].lstrip(".")
        if compression not in ("", "xz", "gz", "bz2", "zst"):
            raise HartvmError(f"{deb}: unsupported data archive {name}")
        try:
            # Python reads xz, gzip and bzip2 itself, and zstd from 3.14 on.
            with tarfile.open(fileobj=_Slice(f, offset, size), mode="r|" + compression) as tar:
                return _extract_tar(tar, patterns, dest)
        except tarfile.CompressionError:
            pass
    # A zstd-compressed package and an older Python: let dpkg-deb decompress.
    if shutil.which("dpkg-deb") is None:
        raise HartvmError(f"cannot extract {deb}: its {name} needs Python 3.14 or dpkg-deb")
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
            names = _extract_tar(tar, patterns, dest)
        process.stdout.read()   # drain, so that dpkg-deb ends normally
        error = process.stderr.read().decode(errors="replace").strip()
    if process.returncode != 0:
        raise HartvmError(f"dpkg-deb --fsys-tarfile {deb} failed: {error}")
    return names


def _extract_tar(tar: tarfile.TarFile, patterns: list[str], dest: Path) -> list[str]:
    # The "data" filter (Python >= 3.11.4) refuses absolute paths, ".." and
    # links that leave the destination, and drops setuid bits and ownership.
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    names = []
    for member in tar:   # a stream: members come in archive order, once
        name = member_name(member.name)
        if not name or not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if ".." in name.split("/"):
            continue
        member.name = name
        try:
            tar.extract(member, dest, **safe)
        except tarfile.TarError as e:
            if getattr(tarfile, "FilterError", None) and isinstance(e, tarfile.FilterError):
                continue   # e.g. a symlink to an absolute path: not needed here
            raise
        names.append(name)
    return names
