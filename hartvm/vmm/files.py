"""Files in and out of a guest: ``put_file``/``get_file`` and ``hartvm cp``.

Everything goes through the command channel (``run``), so the in-process
``VM`` and the handle of a VM process (``RemoteVM``) share this code as a
mixin. A single file travels as itself (``cat``); a directory as a tar
archive: busybox's ``tar`` in the guest, Python's ``tarfile`` on the host,
staged in a temporary file so that neither side needs it all in memory.

``copy_from_guest`` and ``copy_to_guest`` follow ``docker cp``'s rules: a
source ``DIR/.`` copies the directory's contents; a destination that is a
directory receives the source under its own name; otherwise the
destination is created (its parent must exist) or a file replaced.

Guest paths are the guest's business. The host side is not: an archive
from the guest is hostile, so it is extracted with ``tarfile``'s ``data``
filter (no absolute names, no ``..``, no links that lead outside the
destination, no device files), only members under the name that was asked
for are taken, and a new destination is first built in a scratch directory
beside it and then renamed into place, never written through a link.
"""

import os
import shutil
import tarfile
import tempfile

from ..errors import HartvmError, escape, shown
from ..hostfile import open_checked
from .arguments import path_argument

# Guest side of copy_to_guest (argv: destination, source name, mode or "dir",
# "1" to copy a directory's contents). The destination is a directory: the
# source goes into it under its own name; else the destination itself.
_PUT_SCRIPT = r"""
dst=$1 name=$2 kind=$3 contents=$4
case $dst in */) [ -d "$dst" ] || { echo "$dst: not a directory" >&2; exit 1; };; esac
if [ "$contents" = 1 ] || ! [ -d "$dst" ]; then target=$dst; else target=${dst%/}/$name; fi
if [ "$kind" = dir ]; then
    [ -d "$target" ] || mkdir -- "$target" || exit
    exec tar -xf - -C "$target"
fi
cat > "$target" && chmod "$kind" "$target"
"""
# Guest side of copy_from_guest (argv: directory, name in it): the archive on stdout.
_GET_SCRIPT = ('cd -- "$1" 2>/dev/null && { [ -e "$2" ] || [ -L "$2" ]; } || '
               '{ echo "no such file or directory" >&2; exit 1; }; exec tar -cf - -- "$2"')


def split_guest_path(path: str) -> tuple[str, str, bool]:
    """(directory, name, contents) of a guest path: ``contents`` for ``DIR/.`` and
    ``/`` (copy what is in the directory, the name is ``.``)."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise HartvmError(f"bad guest path {path!r}")
    stripped = path.rstrip("/")
    if not stripped:                                # "/" or "//"
        return "/", ".", True
    directory, _, name = stripped.rpartition("/")
    directory = directory or ("/" if stripped.startswith("/") else ".")
    if name == ".":
        return directory, ".", True
    if name == "..":
        raise HartvmError(f"{path}: name a file or a directory, not '..'")
    return directory, name, False


class FileTransfer:
    """``put_file``, ``get_file``, ``copy_to_guest`` and ``copy_from_guest`` for any
    class with ``run`` (a VM or a RemoteVM)."""

    def put_file(self, source, guest_path: str, mode: int = 0o644) -> None:
        """Copy a host file (a path) or ``bytes`` to ``guest_path`` in the guest."""
        if type(mode) is not int or not 0 <= mode <= 0o7777:
            raise HartvmError(f"bad mode {mode!r}: a permission number such as 0o644")
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        elif not isinstance(source, (str, os.PathLike)):
            # open() would take an int as a file descriptor of the host's.
            raise HartvmError(f"put_file takes bytes or a host path, not a "
                              f"{type(source).__name__}")
        else:
            try:
                with os.fdopen(open_checked(source, "put_file"), "rb") as file:
                    data = file.read()
            except OSError as error:
                raise HartvmError(f"{source}: {error.strerror or error}") from None
        result = self.run(["sh", "-c", 'cat > "$1" && chmod "$2" "$1"', "put_file",
                           guest_path, f"{mode:o}"], input=data)
        if result.returncode != 0:
            raise HartvmError(f"cannot write {guest_path} in the guest: {_last_line(result)}")

    def get_file(self, guest_path: str, destination=None) -> bytes:
        """The content of ``guest_path`` in the guest (also written to the host
        path ``destination`` if given)."""
        if destination is not None:
            # (open() would take an int for a descriptor of the host's, and close it.)
            destination = path_argument(destination, "destination")
        result = self.run(["cat", "--", guest_path])
        if result.returncode != 0:
            raise HartvmError(f"cannot read {guest_path} in the guest: {_last_line(result)}")
        if destination is not None:
            try:
                with open(destination, "wb") as file:
                    file.write(result.stdout)
            except OSError as error:
                raise HartvmError(f"{shown(destination)}: {error.strerror or error}") from None
        return result.stdout

    def copy_to_guest(self, source, guest_path: str) -> None:
        """``hartvm cp SOURCE NAME:PATH``: a host file or directory (recursively,
        symbolic links as links, owned by root in the guest) to ``guest_path``."""
        if not isinstance(source, (str, os.PathLike)):
            raise HartvmError(f"copy_to_guest takes a host path, not a {type(source).__name__}")
        source = os.fspath(source)
        split_guest_path(guest_path)            # refuses what is no path
        contents = source.rstrip("/").endswith("/.") or source.rstrip("/") == "."
        name = os.path.basename(os.path.normpath(os.path.abspath(source))) or "."
        try:
            is_dir = os.path.isdir(source)
            if not is_dir:
                # A regular file, or what a link leads to (a FIFO would hang the copy).
                stream = os.fdopen(open_checked(source, "cp"), "rb")
                kind = f"{os.fstat(stream.fileno()).st_mode & 0o7777:o}"
            else:
                stream, kind = tempfile.TemporaryFile(), "dir"
                with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    tar.add(source, arcname=".", filter=_owned_by_root)
                stream.seek(0)
        except OSError as error:
            raise HartvmError(f"{source}: {error.strerror or error}") from None
        with stream:
            result = self.run(["sh", "-c", _PUT_SCRIPT, "hartvm-cp", guest_path, name, kind,
                               "1" if contents else "0"], stdin_fd=stream.fileno())
        if result.returncode != 0:
            raise HartvmError(f"cannot copy to {guest_path} in the guest: {_last_line(result)}")

    def copy_from_guest(self, guest_path: str, destination) -> None:
        """``hartvm cp NAME:PATH DESTINATION``: a guest file or directory
        (recursively) to the host path ``destination``."""
        directory, name, contents = split_guest_path(guest_path)
        if not isinstance(destination, (str, os.PathLike)):
            raise HartvmError(f"copy_from_guest takes a host path, not a "
                              f"{type(destination).__name__}")
        destination = os.fspath(destination)
        if contents or not os.path.isdir(destination):
            if destination.endswith("/") and not os.path.isdir(destination):
                raise HartvmError(f"{destination}: no such directory")
            parent = os.path.dirname(os.path.abspath(destination))
            if not os.path.isdir(parent):
                raise HartvmError(f"{destination}: its directory {parent} does not exist")
        with tempfile.TemporaryFile() as archive:
            result = self.run(["sh", "-c", _GET_SCRIPT, "hartvm-cp", directory, name],
                              stdout=archive.write)
            if result.returncode != 0:
                raise HartvmError(f"cannot copy {guest_path} from the guest: "
                                  f"{_last_line(result)}")
            archive.seek(0)
            if contents:
                _extract_contents(archive, destination)
            elif os.path.isdir(destination):
                extract(archive, destination, name)
            else:
                _extract_as(archive, destination, name)


def _owned_by_root(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Files copied in belong to root in the guest, as ``docker cp`` makes them."""
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    return member


def extract(archive, directory: str, name: str) -> None:
    """Extract the guest's ``archive`` into the host ``directory``: only ``name``
    and what is under it (``.``: everything but the directory itself), each
    member through tarfile's ``data`` filter."""
    def only_what_was_asked(member: tarfile.TarInfo, path: str):
        if name == ".":
            if member.name == ".":
                return None       # the destination itself: its mode stays the user's
            wanted = member.name.startswith("./")
        else:
            wanted = member.name == name or member.name.startswith(name + "/")
        if not wanted:
            raise HartvmError(f"the guest's archive holds {escape(repr(member.name))}, "
                              f"which is not under {escape(repr(name))}: refused")
        return tarfile.data_filter(member, path)

    try:
        with tarfile.open(fileobj=archive, mode="r:") as tar:
            tar.extractall(directory, filter=only_what_was_asked)
    except tarfile.TarError as error:
        raise HartvmError(f"refused the guest's archive: {escape(str(error))}") from None
    except OSError as error:
        raise HartvmError(f"{directory}: {error.strerror or error}") from None


def _extract_contents(archive, destination: str) -> None:
    """A guest directory's contents (``DIR/.``) into ``destination``, made if missing."""
    try:
        os.mkdir(destination)
    except FileExistsError:
        if not os.path.isdir(destination):
            raise HartvmError(f"{destination}: not a directory") from None
    except OSError as error:
        raise HartvmError(f"{destination}: {error.strerror or error}") from None
    extract(archive, destination, ".")


def _extract_as(archive, destination: str, name: str) -> None:
    """The guest's ``name`` becomes ``destination`` (new, or a file it replaces):
    extracted in a scratch directory beside it, then renamed into place."""
    parent = os.path.dirname(os.path.abspath(destination))
    try:
        scratch = tempfile.mkdtemp(prefix=".hartvm-cp-", dir=parent)
    except OSError as error:
        raise HartvmError(f"{parent}: {error.strerror or error}") from None
    try:
        extract(archive, scratch, name)
        copied = os.path.join(scratch, name)
        if not os.path.lexists(copied):
            raise HartvmError(f"the guest's archive does not hold {escape(repr(name))}")
        if os.path.isdir(copied) and os.path.lexists(destination):
            raise HartvmError(f"{destination}: cannot replace a file with a directory")
        os.replace(copied, destination)
    except OSError as error:
        raise HartvmError(f"{destination}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _last_line(result) -> str:
    """The last line of a failed command's stderr, escaped: the guest wrote it."""
    lines = result.stderr.decode(errors="replace").strip().splitlines()
    return escape(lines[-1][-300:]) if lines else f"status {result.returncode}"
