"""A 9P2000.L file server confined to host directories: the host side of shared folders.

It knows nothing of virtio: ``P9Server.handle(request) -> reply`` takes one
whole 9P message and returns the answer (p9.py carries them over a
virtqueue). The protocol is Linux's dialect, 9P2000.L (message layouts as
in Linux's include/net/9p/9p.h and net/9p/client.c, and the diod
protocol description); where the protocol leaves room, the server does
what QEMU's hw/9pfs/9p.c does, and says so where it matters.

Exports. The server serves a table of exports, each a host directory,
read-write or read-only, under a name: ``Tattach`` with ``aname`` N
attaches to export N; with an empty ``aname`` to a synthetic read-only
directory whose entries are the exports (Linux's virtio transport lets a
mount tag be mounted once, so the guest mounts that directory once and
bind-mounts each export where it wants it). The table can be replaced
while the guest runs: fids of exports that went away are closed.

The guest is hostile. The server never reaches outside an export:

- A fid is a path inside its export: a tuple of names, never ``..``, kept
  up to date by renames (as QEMU's ``v9fs_fix_fid_paths``). Every use
  resolves it from the export's root one component at a time, each opened
  with ``O_NOFOLLOW | O_DIRECTORY`` relative to the previous one, so a
  symlink (or a file) in place of a directory fails the walk with ENOTDIR
  instead of being followed, whatever the guest changed meanwhile. The
  last component is used relative to its parent's descriptor, never
  followed: ``lstat``-style calls, ``O_NOFOLLOW`` opens, ``/proc/self/fd``
  of an ``O_PATH | O_NOFOLLOW`` descriptor for chmod and utimes. Symlinks
  go back to the guest as symlinks (``Treadlink``), which the guest's
  kernel resolves within the guest.
- ``..`` pops a name; at an export's root it stays there (QEMU's
  ``v9fs_walk``). Names with ``/`` or NUL, or empty, are refused; so are
  ``.`` and ``..`` where a new name is made.
- Renames and hard links take both ends from fids of the same export.
- Only regular files and directories are opened (with ``O_NONBLOCK``, so a
  FIFO swapped in never blocks the host); device nodes cannot be made.
- A read-only export refuses every change with EROFS on the host side.
- Files the guest makes belong to the user who runs hartvm: ownership
  changes are accepted and ignored, as QEMU's ``security_model=none``
  reports no failure of them (qemu-options.hx, ``-virtfs``). Set-user-ID
  and set-group-ID bits are dropped, so that a guest never plants a
  setuid file of that user on the host.
- Every malformed, truncated, oversized or out-of-order message gets an
  ``Rlerror``; no message can raise out of ``handle``. Memory is bounded:
  replies fit ``msize``, fids per export and open files are capped.

Nothing written is lost: a ``Twrite`` is a ``pwrite`` to the host file
when it arrives, ``Tfsync`` is an ``fsync``, and ``flush()`` (at the end of
a command, and before the server closes) fsyncs every file open for writing
and ``syncfs``-es every export that was written. A guest that caches
writes (hartvm mounts with ``cache=mmap``, vmm/shared_folders.py) writes a
file back at its last close, so ``open_for_writing()`` tells the VMM
whether the guest may still hold written data.
"""

import ctypes
import errno
import logging
import os
import stat
import struct
import time

from ...errors import HartvmError

log = logging.getLogger("hartvm.virtio")

# Message types (Linux include/net/9p/9p.h, enum p9_msg_t); a reply is type + 1.
TLERROR, RLERROR = 6, 7
TSTATFS, TLOPEN, TLCREATE, TSYMLINK, TMKNOD, TRENAME = 8, 12, 14, 16, 18, 20
TREADLINK, TGETATTR, TSETATTR, TXATTRWALK, TXATTRCREATE = 22, 24, 26, 30, 32
TREADDIR, TFSYNC, TLOCK, TGETLOCK, TLINK, TMKDIR, TRENAMEAT, TUNLINKAT = \
    40, 50, 52, 54, 70, 72, 74, 76
TVERSION, TAUTH, TATTACH, TFLUSH, TWALK = 100, 102, 104, 108, 110
TREAD, TWRITE, TCLUNK, TREMOVE = 116, 118, 120, 122

NOTAG = 0xFFFF
NOFID = 0xFFFFFFFF
VERSION = b"9P2000.L"
HEADER = struct.Struct("<IBH")          # size, type, tag
MIN_MSIZE = 4096                        # QEMU's P9_MIN_MSIZE
MAX_MSIZE = 1 << 20                     # Linux's virtio transport stops at 500 KiB
IOHDRSZ = 24                            # P9_IOHDRSZ: Twrite's header, the largest
MAX_WALK = 16                           # P9_MAXWELEM
MAX_DEPTH = 1024                        # names in a fid's path
MAX_FIDS_PER_EXPORT = 8192
MAX_OPEN = 256                          # fids with an open host file, over all exports
QID = struct.Struct("<BIQ")             # type, version, path
QTDIR, QTSYMLINK, QTFILE = 0x80, 0x02, 0x00
V9FS_MAGIC = 0x01021997                 # statfs f_type of a 9p mount (Linux magic.h)
GETATTR_BASIC = 0x7FF                   # P9_STATS_BASIC: mode .. blocks
AT_REMOVEDIR = 0x200

# Tsetattr's valid bits (Linux include/net/9p/9p.h, P9_ATTR_*).
ATTR_MODE, ATTR_UID, ATTR_GID, ATTR_SIZE = 1, 2, 4, 8
ATTR_ATIME, ATTR_MTIME, ATTR_CTIME, ATTR_ATIME_SET, ATTR_MTIME_SET = 16, 32, 64, 128, 256

# Tlopen/Tlcreate flags are Linux's generic O_* values (P9_DOTL_*), whatever the
# host's: only those the server honours are translated; the others (direct
# I/O, noatime, async...) are dropped, as QEMU's get_dotl_openflags drops some.
DOTL_ACCMODE, DOTL_EXCL, DOTL_TRUNC, DOTL_APPEND = 0o3, 0o200, 0o1000, 0o2000
DOTL_WRITES = DOTL_TRUNC | DOTL_APPEND
# Every host open: never follow a last symlink, never block (a FIFO), never
# become the VMM's controlling terminal, never leak into child processes.
OPEN_ALWAYS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
RESOLVE_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
DT_OF_MODE = {stat.S_IFDIR: 4, stat.S_IFREG: 8, stat.S_IFLNK: 10, stat.S_IFIFO: 1,
              stat.S_IFSOCK: 12, stat.S_IFCHR: 2, stat.S_IFBLK: 6}
PERMISSIONS = 0o1777      # what the guest may set: no setuid, no setgid (see above)

_libc = ctypes.CDLL(None, use_errno=True)


class P9Error(Exception):
    """An error for the guest: ``Rlerror`` with this errno."""

    def __init__(self, number: int):
        super().__init__(os.strerror(number))
        self.errno = number


class Malformed(P9Error):
    def __init__(self):
        super().__init__(errno.EINVAL)


class Decoder:
    """Fields of a message body, little-endian; running past the end is ``Malformed``."""

    def __init__(self, data: bytes, offset: int = HEADER.size):
        self.data, self.offset = data, offset

    def _take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise Malformed()
        value = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return value[0]

    def u8(self) -> int:
        return self._take("<B")

    def u16(self) -> int:
        return self._take("<H")

    def u32(self) -> int:
        return self._take("<I")

    def u64(self) -> int:
        return self._take("<Q")

    def string(self) -> bytes:
        length = self.u16()
        if self.offset + length > len(self.data):
            raise Malformed()
        self.offset += length
        return self.data[self.offset - length:self.offset]

    def rest(self) -> bytes:
        return self.data[self.offset:]


def encode_string(value: bytes) -> bytes:
    return struct.pack("<H", len(value)) + value


def error_reply(tag: int, number: int) -> bytes:
    return HEADER.pack(HEADER.size + 4, RLERROR, tag) + struct.pack("<I", number)


class Export:
    """One shared host directory. Its root is opened once (following a symlink
    there is the user's own choice); everything below is resolved from it."""

    def __init__(self, path: str, readonly: bool):
        self.path, self.readonly = path, readonly
        try:
            self.root_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise HartvmError(f"volume {path}: {error.strerror or error}") from None
        self.fids = 0
        self.written = False          # since the last flush (then syncfs)

    def close(self) -> None:
        os.close(self.root_fd)


class Fid:
    """A guest fid: a path in an export (``export`` None: the synthetic root of
    the export table), and once opened a host file descriptor."""
    __slots__ = ("export", "path", "fd", "kind", "writable", "listing", "position", "pending")

    def __init__(self, export: Export | None, path: tuple):
        self.export, self.path = export, path
        self.fd = None
        self.kind = None          # None, "file", "dir" or "xattr" once opened
        self.writable = False
        self.listing = None       # a directory's entries as they are read (generator)
        self.position = 0         # Treaddir offset of the next entry of ``listing``
        self.pending = None       # an entry read but not sent (it did not fit)


def _check_name(name: bytes) -> None:
    """A name a new directory entry may have (QEMU's name_is_illegal, and ``.``/``..``)."""
    if not name or b"/" in name or b"\0" in name:
        raise P9Error(errno.ENOENT)
    if name in (b".", b".."):
        raise P9Error(errno.EEXIST)


def _offset(value: int) -> int:
    """A file offset from the guest: off_t is signed."""
    if value >= 1 << 63:
        raise P9Error(errno.EINVAL)
    return value


class P9Server:
    def __init__(self):
        self.exports: dict[str, Export] = {}
        self.fids: dict[int, Fid] = {}
        self.msize = MAX_MSIZE
        self.open_count = 0
        self.root_fids = 0                   # fids of the synthetic root
        self._devices: dict[int, int] = {}    # host st_dev -> small number, for qid paths
        self._started = time.time_ns()
        self._handlers = {
            TVERSION: self._version, TAUTH: self._auth, TATTACH: self._attach,
            TFLUSH: self._flush, TWALK: self._walk, TLOPEN: self._lopen,
            TLCREATE: self._lcreate, TREAD: self._read, TWRITE: self._write,
            TCLUNK: self._clunk, TREMOVE: self._remove, TGETATTR: self._getattr,
            TSETATTR: self._setattr, TREADDIR: self._readdir, TSTATFS: self._statfs,
            TFSYNC: self._fsync, TLOCK: self._lock, TGETLOCK: self._getlock,
            TXATTRWALK: self._xattrwalk, TXATTRCREATE: self._xattrcreate,
            TREADLINK: self._readlink, TSYMLINK: self._symlink, TMKNOD: self._mknod,
            TMKDIR: self._mkdir, TLINK: self._link, TRENAME: self._rename,
            TRENAMEAT: self._renameat, TUNLINKAT: self._unlinkat,
        }

    # --- the export table -----------------------------------------------------------
    def set_exports(self, table: dict) -> None:
        """Serve ``table`` (name -> (host directory, read-only)) from now on. Exports
        that stay the same keep their fids; the others' fids are closed."""
        keep = {name: export for name, export in self.exports.items()
                if table.get(name) == (export.path, export.readonly)}
        opened = {}
        try:
            for name, (path, readonly) in table.items():
                if name not in keep:
                    opened[name] = Export(path, bool(readonly))
        except BaseException:
            for export in opened.values():
                export.close()
            raise
        for name, export in self.exports.items():
            if keep.get(name) is not export:
                self._drop_export(export)
        self.exports = {**keep, **opened}

    def _drop_export(self, export: Export) -> None:
        for number in [n for n, fid in self.fids.items() if fid.export is export]:
            self._close_fid(self.fids.pop(number))
        self._sync(export)
        export.close()

    def open_for_writing(self) -> bool:
        """Does the guest hold a file open for writing (a fid opened to write)?"""
        return any(fid.writable for fid in self.fids.values())

    def flush(self) -> None:
        """Put everything written so far on the host's disk: fsync each file open
        for writing, syncfs each export written since the last flush."""
        for fid in self.fids.values():
            if fid.writable:
                try:
                    os.fsync(fid.fd)
                except OSError as error:
                    log.warning("9p: fsync of %s: %s", fid.export.path, error)
        for export in self.exports.values():
            self._sync(export)

    @staticmethod
    def _sync(export: Export) -> None:
        if export.written:
            if _libc.syncfs(export.root_fd) != 0:
                log.warning("9p: syncfs of %s: %s", export.path,
                            os.strerror(ctypes.get_errno()))
            export.written = False

    def reset(self) -> None:
        """Forget the session (a device reset, a restored snapshot): every fid is closed."""
        for fid in self.fids.values():
            self._close_fid(fid)
        self.fids.clear()
        self.open_count = self.root_fids = 0
        for export in self.exports.values():
            export.fids = 0

    def close(self) -> None:
        """Flush, close every fid and export."""
        self.flush()
        self.reset()
        for export in self.exports.values():
            export.close()
        self.exports = {}

    # --- messages ---------------------------------------------------------------------
    def handle(self, request: bytes, reply_limit: int | None = None,
               too_long: bool = False) -> bytes:
        """The reply to one request. ``reply_limit``: the room the guest gave for
        it (besides ``msize``); ``too_long``: the request was longer than ``msize``
        and ``request`` is only its start."""
        limit = self.msize if reply_limit is None else min(reply_limit, self.msize)
        if len(request) < HEADER.size:
            return error_reply(NOTAG, errno.EINVAL)
        size, kind, tag = HEADER.unpack_from(request)
        if too_long or size > self.msize:
            return error_reply(tag, errno.EMSGSIZE)
        if size < HEADER.size or size > len(request):
            return error_reply(tag, errno.EINVAL)       # truncated
        handler = self._handlers.get(kind)
        if handler is None:
            # Unknown types, and 9P2000's own that .L replaces (QEMU v9fs_op_not_supp).
            return error_reply(tag, errno.EOPNOTSUPP)
        try:
            body = handler(Decoder(request[:size]), limit - HEADER.size)
        except P9Error as error:
            return error_reply(tag, error.errno)
        except OSError as error:
            return error_reply(tag, error.errno or errno.EIO)
        except (ValueError, OverflowError):      # e.g. a name the host cannot take
            return error_reply(tag, errno.EINVAL)
        except Exception:  # noqa: BLE001 - a server bug must not take the VM down
            log.exception("9p: internal error on message type %d", kind)
            return error_reply(tag, errno.EIO)
        if HEADER.size + len(body) > limit:
            return error_reply(tag, errno.EMSGSIZE)
        return HEADER.pack(HEADER.size + len(body), kind + 1, tag) + body

    # --- fids ----------------------------------------------------------------------------
    def _fid(self, number: int) -> Fid:
        fid = self.fids.get(number)
        if fid is None:
            raise P9Error(errno.ENOENT)           # QEMU's answer to an unknown fid
        return fid

    def _new_fid(self, number: int, export: Export | None, path: tuple) -> Fid:
        if number in self.fids or number == NOFID:
            raise P9Error(errno.EINVAL)           # QEMU's alloc_fid refuses a fid in use
        if (export.fids if export else self.root_fids) >= MAX_FIDS_PER_EXPORT:
            raise P9Error(errno.EMFILE)
        fid = self.fids[number] = Fid(export, path)
        if export:
            export.fids += 1
        else:
            self.root_fids += 1
        return fid

    def _forget(self, number: int) -> None:
        fid = self.fids.pop(number)
        if fid.export:
            fid.export.fids -= 1
        else:
            self.root_fids -= 1
        self._close_fid(fid)

    def _close_fid(self, fid: Fid) -> None:
        if fid.listing is not None:
            fid.listing.close()
            fid.listing = None
        if fid.fd is not None:
            os.close(fid.fd)
            fid.fd = None
            self.open_count -= 1
        fid.kind, fid.writable = None, False

    @staticmethod
    def _unopened(fid: Fid) -> Fid:
        if fid.kind is not None:
            raise P9Error(errno.EBADF)            # walks and opens need an unopened fid
        return fid

    def _export_of(self, fid: Fid, writing: bool = False) -> Export:
        """The fid's export; the synthetic root and read-only exports refuse changes."""
        if fid.export is None or (writing and fid.export.readonly):
            if writing:
                raise P9Error(errno.EROFS)
            raise P9Error(errno.EINVAL)
        return fid.export

    # --- resolving paths inside an export ---------------------------------------------------
    @staticmethod
    def _open_dir(export: Export, path: tuple) -> int:
        """An O_PATH descriptor of the directory ``path``, each component opened
        without following symlinks, relative to the last."""
        fd = os.open(".", RESOLVE_DIR, dir_fd=export.root_fd)
        try:
            for name in path:
                child = os.open(name, RESOLVE_DIR, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _lstat(self, export: Export, path: tuple) -> os.stat_result:
        if not path:
            return os.stat(export.root_fd)
        parent = self._open_dir(export, path[:-1])
        try:
            return os.stat(path[-1], dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)

    def _stat_of(self, fid: Fid) -> os.stat_result:
        """What the fid names; an open fid its open file (which may be unlinked)."""
        if fid.fd is not None:
            return os.stat(fid.fd)
        return self._lstat(self._export_of(fid), fid.path)

    def _open_object(self, export: Export, path: tuple) -> int:
        """An O_PATH descriptor of ``path`` itself, even a symlink (never followed)."""
        if not path:
            return os.open(".", os.O_PATH | os.O_CLOEXEC, dir_fd=export.root_fd)
        parent = self._open_dir(export, path[:-1])
        try:
            return os.open(path[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        finally:
            os.close(parent)

    def _open_file(self, export: Export, path: tuple, flags: int) -> int:
        """Open a regular file or directory in ``path`` for I/O; anything else
        (a FIFO, a device, a socket, a symlink) is refused."""
        if not path:
            fd = os.open(".", flags | OPEN_ALWAYS, dir_fd=export.root_fd)
        else:
            parent = self._open_dir(export, path[:-1])
            try:
                fd = os.open(path[-1], flags | OPEN_ALWAYS, dir_fd=parent)
            finally:
                os.close(parent)
        mode = os.stat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            os.close(fd)
            raise P9Error(errno.ENXIO)
        return fd

    def _qid(self, st: os.stat_result) -> bytes:
        """QEMU's stat_to_qid: the inode number, with the device folded into the
        top bits as its multidevs=remap does, so that two files of different host
        filesystems (two exports) never share a qid."""
        kind = QTDIR if stat.S_ISDIR(st.st_mode) else \
            QTSYMLINK if stat.S_ISLNK(st.st_mode) else QTFILE
        device = self._devices.setdefault(st.st_dev, min(len(self._devices), 0xFFFF))
        path = (device << 48) | (st.st_ino & ((1 << 48) - 1))
        version = (int(st.st_mtime) ^ (st.st_size << 8)) & 0xFFFFFFFF
        return QID.pack(kind, version, path)

    ROOT_QID = QID.pack(QTDIR, 0, 1 << 63)      # the synthetic root: no host inode

    def _qid_of(self, export: Export | None, path: tuple) -> bytes:
        return self.ROOT_QID if export is None else self._qid(self._lstat(export, path))

    def _iounit(self) -> int:
        """QEMU's get_iounit: the largest multiple of a block that fits a message."""
        room = self.msize - IOHDRSZ
        return room // 4096 * 4096 or room

    # --- session ---------------------------------------------------------------------------
    def _version(self, d: Decoder, room: int) -> bytes:
        msize, version = d.u32(), d.string()
        if msize < MIN_MSIZE:
            raise P9Error(errno.EMSGSIZE)
        self.reset()                      # a new session: every fid is clunked (version(5))
        self.msize = min(msize, MAX_MSIZE)
        return struct.pack("<I", self.msize) + \
            encode_string(VERSION if version == VERSION else b"unknown")

    def _auth(self, d: Decoder, room: int) -> bytes:
        raise P9Error(errno.EOPNOTSUPP)          # no authentication (QEMU v9fs_op_not_supp)

    def _attach(self, d: Decoder, room: int) -> bytes:
        number, _afid, _uname, aname, _n_uname = d.u32(), d.u32(), d.string(), d.string(), \
            d.u32()
        if aname in (b"", b"/"):
            export = None
        else:
            export = self.exports.get(aname.decode("utf-8", "replace"))
            if export is None:
                raise P9Error(errno.ENOENT)
        qid = self._qid_of(export, ())
        self._new_fid(number, export, ())
        return qid

    def _flush(self, d: Decoder, room: int) -> bytes:
        d.u16()
        return b""       # requests are answered in order: none is left to cancel

    def _clunk(self, d: Decoder, room: int) -> bytes:
        number = d.u32()
        self._fid(number)
        self._forget(number)
        return b""

    # --- walking -----------------------------------------------------------------------------
    def _walk(self, d: Decoder, room: int) -> bytes:
        number, new_number, count = d.u32(), d.u32(), d.u16()
        if count > MAX_WALK:
            raise P9Error(errno.EINVAL)
        names = [d.string() for _ in range(count)]
        fid = self._unopened(self._fid(number))
        if new_number != number and (new_number in self.fids or new_number == NOFID):
            raise P9Error(errno.EINVAL)
        for name in names:
            if not name or b"/" in name or b"\0" in name:
                raise P9Error(errno.ENOENT)
        export, path = fid.export, fid.path
        qids = []
        for name in names:
            try:
                export, path = self._step(export, path, name)
                qids.append(self._qid_of(export, path))
            except (OSError, P9Error):
                if not qids:
                    raise
                break       # walk(5): the qids walked so far, and no new fid
        if len(qids) == count:
            if new_number == number:
                self._move(fid, export, path)
            else:
                self._new_fid(new_number, export, path)
        return struct.pack("<H", len(qids)) + b"".join(qids)

    def _step(self, export: Export | None, path: tuple, name: bytes):
        """Where walking ``name`` from (export, path) leads."""
        if name == b".":
            return export, path
        if export is None:                      # the synthetic root: its entries are exports
            target = None if name == b".." else \
                self.exports.get(name.decode("utf-8", "replace"))
            if name != b".." and target is None:
                raise P9Error(errno.ENOENT)
            return target, ()
        if name == b"..":
            return export, path[:-1]            # at the root, ".." is the root
        if len(path) >= MAX_DEPTH:
            raise P9Error(errno.ENAMETOOLONG)
        return export, path + (name,)

    def _move(self, fid: Fid, export: Export | None, path: tuple) -> None:
        """A walk onto the fid itself (newfid == fid)."""
        if export is not fid.export:
            target = export.fids if export else self.root_fids
            if target >= MAX_FIDS_PER_EXPORT:
                raise P9Error(errno.EMFILE)
            if fid.export:
                fid.export.fids -= 1
            else:
                self.root_fids -= 1
            if export:
                export.fids += 1
            else:
                self.root_fids += 1
        fid.export, fid.path = export, path

    # --- opening ----------------------------------------------------------------------------
    def _lopen(self, d: Decoder, room: int) -> bytes:
        fid, flags = self._unopened(self._fid(d.u32())), d.u32()
        if fid.export is None:                  # the synthetic root: a directory to read
            if flags & DOTL_ACCMODE:
                raise P9Error(errno.EISDIR)
            fid.kind = "dir"
            return self.ROOT_QID + struct.pack("<I", 0)
        export = fid.export
        st = self._lstat(export, fid.path)
        access = flags & DOTL_ACCMODE
        if access == 3:
            raise P9Error(errno.EINVAL)
        if stat.S_ISDIR(st.st_mode):
            if access:
                raise P9Error(errno.EISDIR)
            host_flags = os.O_RDONLY | os.O_DIRECTORY
        elif stat.S_ISREG(st.st_mode):
            writing = access != 0 or flags & DOTL_WRITES
            if writing and export.readonly:     # QEMU's v9fs_open: is_ro_export
                raise P9Error(errno.EROFS)
            host_flags = (os.O_RDONLY, os.O_WRONLY, os.O_RDWR)[access] | \
                (os.O_TRUNC if flags & DOTL_TRUNC else 0) | \
                (os.O_APPEND if flags & DOTL_APPEND else 0)
        elif stat.S_ISLNK(st.st_mode):
            raise P9Error(errno.ELOOP)
        else:
            raise P9Error(errno.ENXIO)          # FIFOs, sockets, devices are not opened
        self._open_into(fid, self._open_file(export, fid.path, host_flags), access)
        return self._qid(os.stat(fid.fd)) + struct.pack("<I", self._iounit())

    def _open_into(self, fid: Fid, fd: int, access: int) -> None:
        if self.open_count >= MAX_OPEN:
            os.close(fd)
            raise P9Error(errno.EMFILE)
        self.open_count += 1
        fid.fd = fd
        fid.kind = "dir" if stat.S_ISDIR(os.stat(fd).st_mode) else "file"
        fid.writable = access in (1, 2)
        if fid.writable:
            fid.export.written = True

    def _lcreate(self, d: Decoder, room: int) -> bytes:
        fid, name, flags, mode, _gid = self._fid(d.u32()), d.string(), d.u32(), d.u32(), \
            d.u32()
        export = self._export_of(self._unopened(fid), writing=True)
        _check_name(name)
        access = flags & DOTL_ACCMODE
        if access == 3:
            raise P9Error(errno.EINVAL)
        if self.open_count >= MAX_OPEN:
            raise P9Error(errno.EMFILE)
        if len(fid.path) >= MAX_DEPTH:
            raise P9Error(errno.ENAMETOOLONG)
        host_flags = (os.O_RDONLY, os.O_WRONLY, os.O_RDWR)[access] | os.O_CREAT | \
            (os.O_EXCL if flags & DOTL_EXCL else 0) | \
            (os.O_TRUNC if flags & DOTL_TRUNC else 0) | \
            (os.O_APPEND if flags & DOTL_APPEND else 0)
        parent = self._open_dir(export, fid.path)
        try:
            fd = os.open(name, host_flags | OPEN_ALWAYS, mode & PERMISSIONS, dir_fd=parent)
        finally:
            os.close(parent)
        if not stat.S_ISREG(os.stat(fd).st_mode):     # an existing FIFO or directory
            os.close(fd)
            raise P9Error(errno.ENXIO)
        fid.path = fid.path + (name,)
        export.written = True
        self._open_into(fid, fd, access)
        return self._qid(os.stat(fd)) + struct.pack("<I", self._iounit())

    # --- I/O ------------------------------------------------------------------------------
    def _read(self, d: Decoder, room: int) -> bytes:
        fid, offset, count = self._fid(d.u32()), _offset(d.u64()), d.u32()
        if fid.kind == "xattr":
            return struct.pack("<I", 0)            # the (empty) attribute list
        if fid.kind != "file":
            raise P9Error(errno.EINVAL)            # QEMU's v9fs_read on an unopened fid
        data = os.pread(fid.fd, min(count, room - 4), offset)
        return struct.pack("<I", len(data)) + data

    def _write(self, d: Decoder, room: int) -> bytes:
        fid, offset, count = self._fid(d.u32()), _offset(d.u64()), d.u32()
        data = memoryview(d.rest())
        if count > len(data):
            raise Malformed()
        if fid.kind != "file":
            raise P9Error(errno.EINVAL)
        if not fid.writable:
            raise P9Error(errno.EROFS if fid.export.readonly else errno.EBADF)
        data, total = data[:count], 0
        while total < count:
            written = os.pwrite(fid.fd, data[total:], offset + total)
            if written == 0:
                break
            total += written
        return struct.pack("<I", total)

    def _fsync(self, d: Decoder, room: int) -> bytes:
        fid = self._fid(d.u32())
        datasync = d.u32() if d.offset < len(d.data) else 0   # older clients omit it
        if fid.fd is None:
            raise P9Error(errno.EBADF)
        (os.fdatasync if datasync else os.fsync)(fid.fd)
        return b""

    def _readdir(self, d: Decoder, room: int) -> bytes:
        fid, offset, count = self._fid(d.u32()), d.u64(), d.u32()
        if fid.kind != "dir":
            raise P9Error(errno.EINVAL)            # QEMU: no directory stream
        if fid.listing is None or offset != fid.position:
            # Offsets are entry numbers: a seek elsewhere lists again from the start.
            if fid.listing is not None:
                fid.listing.close()
            fid.listing, fid.position, fid.pending = self._entries(fid), 0, None
            for _ in range(offset):
                if next(fid.listing, None) is None:
                    break
                fid.position += 1
        room, out = min(count, room - 4), bytearray()
        while True:
            entry = fid.pending or next(fid.listing, None)
            fid.pending = None
            if entry is None:
                break
            name, qid, kind = entry
            record = qid + struct.pack("<QB", fid.position + 1, kind) + encode_string(name)
            if len(out) + len(record) > room:
                fid.pending = entry
                break
            out += record
            fid.position += 1
        return struct.pack("<I", len(out)) + bytes(out)

    def _entries(self, fid: Fid):
        """(name, qid, d_type) of each entry of an open directory: ``.`` and ``..``
        first (as a host readdir gives them, and QEMU passes them on)."""
        if fid.export is None:
            yield b".", self.ROOT_QID, 4
            yield b"..", self.ROOT_QID, 4
            for name, export in list(self.exports.items()):
                yield name.encode(), self._qid(os.stat(export.root_fd)), 4
            return
        here = os.stat(fid.fd)
        yield b".", self._qid(here), 4
        parent = self._lstat(fid.export, fid.path[:-1]) if fid.path else here
        yield b"..", self._qid(parent), 4
        with os.scandir(fid.fd) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue                    # gone since it was listed
                yield os.fsencode(entry.name), self._qid(st), \
                    DT_OF_MODE.get(stat.S_IFMT(st.st_mode), 0)

    # --- attributes ---------------------------------------------------------------------------
    def _getattr(self, d: Decoder, room: int) -> bytes:
        fid, _mask = self._fid(d.u32()), d.u64()
        if fid.export is None:
            seconds, nanoseconds = divmod(self._started, 10**9)
            return struct.pack("<Q", GETATTR_BASIC) + self.ROOT_QID + struct.pack(
                "<IIIQQQQQ", stat.S_IFDIR | 0o555, os.getuid(), os.getgid(), 2, 0, 0, 4096, 0) \
                + struct.pack("<QQ", seconds, nanoseconds) * 3 + bytes(32)
        st = self._stat_of(fid)
        times = b"".join(struct.pack("<QQ", ns // 10**9, ns % 10**9)
                         for ns in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns))
        return struct.pack("<Q", GETATTR_BASIC) + self._qid(st) + struct.pack(
            "<IIIQQQQQ", st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_rdev,
            st.st_size, st.st_blksize, st.st_blocks) + times + bytes(32)   # btime, gen, version

    def _setattr(self, d: Decoder, room: int) -> bytes:
        fid, valid, mode, _uid, _gid = self._fid(d.u32()), d.u32(), d.u32(), d.u32(), d.u32()
        size = _offset(d.u64())
        atime, atime_ns, mtime, mtime_ns = d.u64(), d.u64(), d.u64(), d.u64()
        changes = valid & (ATTR_MODE | ATTR_SIZE | ATTR_ATIME | ATTR_MTIME)
        if not changes:
            # Only ownership or ctime: ownership is ignored (security_model=none).
            self._export_of(fid)
            return b""
        export = self._export_of(fid, writing=True)
        # QEMU's v9fs_setattr order: mode, times, (ownership), size.
        if valid & ATTR_MODE:
            self._chmod(export, fid.path, mode & PERMISSIONS)
        if valid & (ATTR_ATIME | ATTR_MTIME):
            self._utimes(export, fid, valid, _timestamp(atime, atime_ns),
                         _timestamp(mtime, mtime_ns))
        if valid & ATTR_SIZE:
            self._truncate(export, fid, size)
        return b""

    def _chmod(self, export: Export, path: tuple, mode: int) -> None:
        fd = self._open_object(export, path)
        try:
            if stat.S_ISLNK(os.stat(fd).st_mode):
                raise P9Error(errno.EOPNOTSUPP)   # a symlink's mode cannot change
            # The O_PATH descriptor is the file itself: its /proc link is never a symlink.
            os.chmod(f"/proc/self/fd/{fd}", mode)
        finally:
            os.close(fd)

    def _utimes(self, export: Export, fid: Fid, valid: int, atime: int, mtime: int) -> None:
        now = time.time_ns()
        fd = self._open_object(export, fid.path)
        try:
            st = os.stat(fd)
            times = (
                (atime if valid & ATTR_ATIME_SET else now) if valid & ATTR_ATIME
                else st.st_atime_ns,
                (mtime if valid & ATTR_MTIME_SET else now) if valid & ATTR_MTIME
                else st.st_mtime_ns)
            if stat.S_ISLNK(st.st_mode):
                parent = self._open_dir(export, fid.path[:-1])
                try:
                    os.utime(fid.path[-1], ns=times, dir_fd=parent, follow_symlinks=False)
                finally:
                    os.close(parent)
            else:
                os.utime(f"/proc/self/fd/{fd}", ns=times)
        finally:
            os.close(fd)

    def _truncate(self, export: Export, fid: Fid, size: int) -> None:
        if fid.writable:
            os.ftruncate(fid.fd, size)        # also an open file that was unlinked
            return
        fd = self._open_file(export, fid.path, os.O_WRONLY)
        try:
            if not stat.S_ISREG(os.stat(fd).st_mode):
                raise P9Error(errno.EISDIR)
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        export.written = True

    def _statfs(self, d: Decoder, room: int) -> bytes:
        fid = self._fid(d.u32())
        if fid.export is None:
            return struct.pack("<IIQQQQQQI", V9FS_MAGIC, 4096, 0, 0, 0, 0, 0, 0, 255)
        st = os.statvfs(fid.export.root_fd)
        return struct.pack("<IIQQQQQQI", V9FS_MAGIC, st.f_bsize, st.f_blocks, st.f_bfree,
                           st.f_bavail, st.f_files, st.f_ffree, st.f_fsid, st.f_namemax)

    def _lock(self, d: Decoder, room: int) -> bytes:
        # QEMU's v9fs_lock: the guest's VFS does the locking; the server says yes.
        fid, _type, flags = self._fid(d.u32()), d.u8(), d.u32()
        d.u64(), d.u64(), d.u32(), d.string()
        if flags & ~1:                           # only P9_LOCK_FLAGS_BLOCK
            raise P9Error(errno.EINVAL)
        self._stat_of(fid)
        return b"\0"                             # P9_LOCK_SUCCESS

    def _getlock(self, d: Decoder, room: int) -> bytes:
        # QEMU's v9fs_getlock: never a conflicting lock (type F_UNLCK).
        fid, _type, start, length, proc_id, client = self._fid(d.u32()), d.u8(), d.u64(), \
            d.u64(), d.u32(), d.string()
        self._stat_of(fid)
        return struct.pack("<BQQI", 2, start, length, proc_id) + encode_string(client)

    def _xattrwalk(self, d: Decoder, room: int) -> bytes:
        # No extended attributes are shown: host labels are no business of the
        # guest's. The list is empty and every named attribute is missing.
        fid, new_number, name = self._fid(d.u32()), d.u32(), d.string()
        if name:
            raise P9Error(errno.ENODATA)
        if fid.export is not None:
            self._stat_of(fid)
        self._new_fid(new_number, fid.export, fid.path).kind = "xattr"
        return struct.pack("<Q", 0)

    def _xattrcreate(self, d: Decoder, room: int) -> bytes:
        fid = self._fid(d.u32())
        self._export_of(fid, writing=True)
        raise P9Error(errno.EOPNOTSUPP)

    # --- names -------------------------------------------------------------------------------
    def _in_directory(self, d: Decoder, writing: bool = True):
        """(export, directory path, name) of a request that starts dfid[4] name[s]."""
        fid, name = self._fid(d.u32()), d.string()
        export = self._export_of(fid, writing)
        _check_name(name)
        if len(fid.path) >= MAX_DEPTH:
            raise P9Error(errno.ENAMETOOLONG)
        return export, fid.path, name

    def _made(self, export: Export, path: tuple) -> bytes:
        export.written = True
        return self._qid(self._lstat(export, path))

    def _mkdir(self, d: Decoder, room: int) -> bytes:
        export, path, name = self._in_directory(d)
        mode, _gid = d.u32(), d.u32()
        parent = self._open_dir(export, path)
        try:
            os.mkdir(name, mode & PERMISSIONS, dir_fd=parent)
        finally:
            os.close(parent)
        return self._made(export, path + (name,))

    def _symlink(self, d: Decoder, room: int) -> bytes:
        export, path, name = self._in_directory(d)
        target, _gid = d.string(), d.u32()
        if not target or b"\0" in target:
            raise P9Error(errno.ENOENT)
        parent = self._open_dir(export, path)
        try:
            os.symlink(target, name, dir_fd=parent)     # its text is never followed here
        finally:
            os.close(parent)
        return self._made(export, path + (name,))

    def _mknod(self, d: Decoder, room: int) -> bytes:
        export, path, name = self._in_directory(d)
        mode, _major, _minor, _gid = d.u32(), d.u32(), d.u32(), d.u32()
        kind = stat.S_IFMT(mode)
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            raise P9Error(errno.EPERM)            # no device nodes on the host
        if kind not in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFREG):
            raise P9Error(errno.EINVAL)
        parent = self._open_dir(export, path)
        try:
            os.mknod(name, kind | (mode & PERMISSIONS), dir_fd=parent)
        finally:
            os.close(parent)
        return self._made(export, path + (name,))

    def _readlink(self, d: Decoder, room: int) -> bytes:
        fid = self._fid(d.u32())
        export = self._export_of(fid)
        if not fid.path:
            raise P9Error(errno.EINVAL)
        parent = self._open_dir(export, fid.path[:-1])
        try:
            return encode_string(os.readlink(fid.path[-1], dir_fd=parent))
        finally:
            os.close(parent)

    def _link(self, d: Decoder, room: int) -> bytes:
        directory, source, name = self._fid(d.u32()), self._fid(d.u32()), d.string()
        export = self._export_of(directory, writing=True)
        _check_name(name)
        if source.export is not export:
            raise P9Error(errno.EXDEV)            # a hard link stays inside its export
        if not source.path:
            raise P9Error(errno.EPERM)
        self._rename_or_link(export, source.path, directory.path + (name,), link=True)
        return b""

    def _rename(self, d: Decoder, room: int) -> bytes:
        fid, directory, name = self._fid(d.u32()), self._fid(d.u32()), d.string()
        export = self._export_of(fid, writing=True)
        _check_name(name)
        if directory.export is not export:
            raise P9Error(errno.EXDEV)
        if not fid.path:
            raise P9Error(errno.EBUSY)            # an export's root stays where it is
        self._rename_or_link(export, fid.path, directory.path + (name,))
        return b""

    def _renameat(self, d: Decoder, room: int) -> bytes:
        old_dir, old_name = self._fid(d.u32()), d.string()
        new_dir, new_name = self._fid(d.u32()), d.string()
        export = self._export_of(old_dir, writing=True)
        _check_name(old_name)
        _check_name(new_name)
        if new_dir.export is not export:
            raise P9Error(errno.EXDEV)
        self._rename_or_link(export, old_dir.path + (old_name,), new_dir.path + (new_name,))
        return b""

    def _rename_or_link(self, export: Export, old: tuple, new: tuple, link=False) -> None:
        if len(new) > MAX_DEPTH:
            raise P9Error(errno.ENAMETOOLONG)
        old_parent = self._open_dir(export, old[:-1])
        try:
            new_parent = self._open_dir(export, new[:-1])
            try:
                if link:
                    os.link(old[-1], new[-1], src_dir_fd=old_parent, dst_dir_fd=new_parent,
                            follow_symlinks=False)
                else:
                    os.rename(old[-1], new[-1], src_dir_fd=old_parent, dst_dir_fd=new_parent)
            finally:
                os.close(new_parent)
        finally:
            os.close(old_parent)
        export.written = True
        if not link:
            # QEMU's v9fs_fix_fid_paths: fids at or below the old name follow it.
            for fid in self.fids.values():
                if fid.export is export and fid.path[:len(old)] == old:
                    fid.path = new + fid.path[len(old):]

    def _unlinkat(self, d: Decoder, room: int) -> bytes:
        export, path, name = self._in_directory(d)
        flags = d.u32()
        self._unlink(export, path + (name,), directory=bool(flags & AT_REMOVEDIR))
        return b""

    def _remove(self, d: Decoder, room: int) -> bytes:
        number = d.u32()
        fid = self._fid(number)
        try:                                      # remove(5): the fid is clunked, even on failure
            export = self._export_of(fid, writing=True)
            if not fid.path:
                raise P9Error(errno.EBUSY)
            st = self._lstat(export, fid.path)
            self._unlink(export, fid.path, directory=stat.S_ISDIR(st.st_mode))
        finally:
            self._forget(number)
        return b""

    def _unlink(self, export: Export, path: tuple, directory: bool) -> None:
        parent = self._open_dir(export, path[:-1])
        try:
            if directory:
                os.rmdir(path[-1], dir_fd=parent)
            else:
                os.unlink(path[-1], dir_fd=parent)
        finally:
            os.close(parent)
        export.written = True


def _timestamp(seconds: int, nanoseconds: int) -> int:
    if seconds >= 1 << 62 or nanoseconds >= 10**9:
        raise P9Error(errno.EINVAL)
    return seconds * 10**9 + nanoseconds
