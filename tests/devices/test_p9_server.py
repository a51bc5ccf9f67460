"""The 9P2000.L server against hostile raw messages, without Linux.

A client is played from Python: each test builds 9P messages by hand and
reads the replies. The exported directory sits next to a "host" directory
with a secret; no message may read, change or even reveal it: not ``..``
walks, not symlinks (absolute or relative) placed in the export, not names
with slashes, not links or renames towards it. Read-only exports refuse
every change with EROFS; malformed, truncated, oversized and out-of-order
messages get Rlerror; a random message storm never raises.
"""

import errno
import logging
import os
import random
import stat
import struct

import pytest

from hartvm.devices.virtio import p9server as p9
from hartvm.devices.virtio.p9server import P9Server

SECRET = b"host secret\n"
O_RDONLY, O_WRONLY, O_RDWR, O_TRUNC = 0, 1, 2, 0o1000


def string(value) -> bytes:
    value = value.encode() if isinstance(value, str) else value
    return struct.pack("<H", len(value)) + value


class Client:
    """Raw 9P over a server: ``call`` sends one message and returns (type, body)."""

    def __init__(self, server):
        self.server = server
        self.tag = 0

    def raw(self, kind: int, body: bytes, reply_limit=None) -> bytes:
        self.tag = (self.tag + 1) % 0xFFFF
        message = struct.pack("<IBH", 7 + len(body), kind, self.tag) + body
        reply = self.server.handle(message, reply_limit)
        size, rtype, tag = struct.unpack_from("<IBH", reply)
        assert size == len(reply) and tag == self.tag
        return reply

    def call(self, kind: int, body: bytes):
        reply = self.raw(kind, body)
        return reply[4], reply[7:]

    def ok(self, kind: int, body: bytes) -> bytes:
        rtype, payload = self.call(kind, body)
        assert rtype == kind + 1, (kind, os.strerror(struct.unpack("<I", payload)[0])
                                   if rtype == p9.RLERROR else rtype)
        return payload

    def error(self, kind: int, body: bytes) -> int:
        rtype, payload = self.call(kind, body)
        assert rtype == p9.RLERROR, f"message {kind} succeeded"
        return struct.unpack("<I", payload)[0]

    # --- messages ----------------------------------------------------------------
    def version(self, msize=65536):
        return self.ok(p9.TVERSION, struct.pack("<I", msize) + string("9P2000.L"))

    def attach(self, fid, aname="0"):
        return self.ok(p9.TATTACH, struct.pack("<II", fid, p9.NOFID) + string("root")
                       + string(aname) + struct.pack("<I", 0))

    def walk_body(self, fid, newfid, *names):
        return struct.pack("<IIH", fid, newfid, len(names)) + b"".join(map(string, names))

    def walk(self, fid, newfid, *names) -> list:
        payload = self.ok(p9.TWALK, self.walk_body(fid, newfid, *names))
        count = struct.unpack_from("<H", payload)[0]
        return [payload[2 + 13 * i:15 + 13 * i] for i in range(count)]

    def walk_error(self, fid, newfid, *names) -> int:
        return self.error(p9.TWALK, self.walk_body(fid, newfid, *names))

    def walk_fails(self, fid, newfid, *names) -> None:
        """The walk does not get through: Rlerror, or walk(5)'s partial Rwalk
        (fewer qids than names), and either way no new fid."""
        rtype, payload = self.call(p9.TWALK, self.walk_body(fid, newfid, *names))
        assert rtype == p9.RLERROR or struct.unpack_from("<H", payload)[0] < len(names)
        assert newfid not in self.server.fids

    def lopen(self, fid, flags=O_RDONLY):
        return self.ok(p9.TLOPEN, struct.pack("<II", fid, flags))

    def read(self, fid, offset=0, count=4096) -> bytes:
        payload = self.ok(p9.TREAD, struct.pack("<IQI", fid, offset, count))
        return payload[4:4 + struct.unpack_from("<I", payload)[0]]

    def write(self, fid, data, offset=0) -> int:
        payload = self.ok(p9.TWRITE, struct.pack("<IQI", fid, offset, len(data)) + data)
        return struct.unpack("<I", payload)[0]

    def clunk(self, fid):
        self.ok(p9.TCLUNK, struct.pack("<I", fid))

    def getattr(self, fid) -> dict:
        payload = self.ok(p9.TGETATTR, struct.pack("<IQ", fid, p9.GETATTR_BASIC))
        mode, uid, gid, nlink, rdev, size = struct.unpack_from("<IIIQQQ", payload, 21)
        return {"qid": payload[8:21], "mode": mode, "uid": uid, "size": size}

    def readdir(self, fid) -> list:
        names, offset = [], 0
        while True:
            payload = self.ok(p9.TREADDIR, struct.pack("<IQI", fid, offset, 200))
            count = struct.unpack_from("<I", payload)[0]
            if not count:
                return names
            data, at = payload[4:4 + count], 0
            while at < len(data):
                offset, _ = struct.unpack_from("<QB", data, at + 13)
                length = struct.unpack_from("<H", data, at + 22)[0]
                names.append(data[at + 24:at + 24 + length].decode())
                at += 24 + length

    def lcreate_body(self, fid, name, flags=O_RDWR, mode=0o644):
        return struct.pack("<I", fid) + string(name) + struct.pack("<III", flags, mode, 0)

    def mkdir_body(self, fid, name, mode=0o755):
        return struct.pack("<I", fid) + string(name) + struct.pack("<II", mode, 0)

    def symlink_body(self, fid, name, target):
        return struct.pack("<I", fid) + string(name) + string(target) + struct.pack("<I", 0)

    def link_body(self, dfid, fid, name):
        return struct.pack("<II", dfid, fid) + string(name)

    def rename_body(self, fid, dfid, name):
        return struct.pack("<II", fid, dfid) + string(name)

    def renameat_body(self, olddir, oldname, newdir, newname):
        return struct.pack("<I", olddir) + string(oldname) + struct.pack("<I", newdir) \
            + string(newname)

    def unlinkat_body(self, fid, name, flags=0):
        return struct.pack("<I", fid) + string(name) + struct.pack("<I", flags)

    def setattr_body(self, fid, valid, mode=0, uid=0, gid=0, size=0):
        return struct.pack("<IIIIIQQQQQ", fid, valid, mode, uid, gid, size, 0, 0, 0, 0)


@pytest.fixture
def host(tmp_path):
    """tmp/host/secret (outside every export), tmp/host/export (read-write, export 0)
    with a file, a directory and hostile symlinks, tmp/host/ro (read-only, export 1)."""
    base = tmp_path / "host"
    base.mkdir()
    (base / "secret").write_bytes(SECRET)
    export = base / "export"
    export.mkdir()
    (export / "hello.txt").write_bytes(b"hello from the host\n")
    (export / "dir").mkdir()
    (export / "dir" / "inner").write_bytes(b"inner\n")
    os.symlink(str(base / "secret"), export / "abs")               # absolute, outside
    os.symlink("/etc/passwd", export / "passwd")
    os.symlink("../..", export / "up")                              # relative, outside
    os.symlink(str(base), export / "outdir")                        # a directory outside
    ro = base / "ro"
    ro.mkdir()
    (ro / "keep.txt").write_bytes(b"keep\n")
    (ro / "sub").mkdir()
    return base


@pytest.fixture
def server(host):
    server = P9Server()
    server.set_exports({"0": (str(host / "export"), False), "1": (str(host / "ro"), True)})
    yield server
    server.close()


@pytest.fixture
def client(server):
    client = Client(server)
    client.version()
    client.attach(0, "0")
    client.attach(1, "1")
    return client


def snapshot_of(directory):
    """Every path below ``directory`` with its type, mode and content."""
    result = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            content = open(path, "rb").read() if stat.S_ISREG(st.st_mode) else \
                os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            result[os.path.relpath(path, directory)] = (stat.S_IFMT(st.st_mode),
                                                        st.st_mode & 0o7777, content)
    return result


# --- a normal session -------------------------------------------------------------------

def test_a_host_file_is_read_and_a_new_file_reaches_the_host_at_once(client, host):
    client.walk(0, 10, "hello.txt")
    client.lopen(10)
    assert client.read(10) == b"hello from the host\n"
    client.walk(0, 11)
    client.ok(p9.TLCREATE, client.lcreate_body(11, "new.txt"))
    assert client.write(11, b"written by the guest") == 20
    # No fsync, no clunk: the bytes are in the host file already.
    assert (host / "export" / "new.txt").read_bytes() == b"written by the guest"
    assert stat.S_IMODE(os.stat(host / "export" / "new.txt").st_mode) == 0o644


def test_directories_list_their_entries_with_dot_and_dotdot(client):
    client.walk(0, 10)
    client.lopen(10)
    assert sorted(client.readdir(10)) == sorted(
        [".", "..", "hello.txt", "dir", "abs", "passwd", "up", "outdir"])


def test_the_synthetic_root_lists_the_exports_and_leads_into_them(client):
    client.attach(5, "")
    client.walk(5, 6)
    client.lopen(6)
    assert sorted(client.readdir(6)) == [".", "..", "0", "1"]
    client.walk(5, 7, "0", "dir", "inner")
    client.lopen(7)
    assert client.read(7) == b"inner\n"
    assert client.error(p9.TMKDIR, client.mkdir_body(5, "new")) == errno.EROFS


def test_a_rename_carries_the_fids_below_it(client, host):
    client.walk(0, 10, "dir", "inner")
    client.ok(p9.TRENAMEAT, client.renameat_body(0, "dir", 0, "moved"))
    assert (host / "export" / "moved" / "inner").exists()
    client.lopen(10)
    assert client.read(10) == b"inner\n"


def test_ownership_changes_are_ignored_and_setuid_bits_dropped(client, host):
    path = host / "export" / "hello.txt"
    owner = os.stat(path).st_uid
    client.walk(0, 10, "hello.txt")
    client.ok(p9.TSETATTR, client.setattr_body(10, p9.ATTR_UID | p9.ATTR_GID, uid=12345,
                                                 gid=12345))
    client.ok(p9.TSETATTR, client.setattr_body(10, p9.ATTR_MODE, mode=0o6755))
    assert os.stat(path).st_uid == owner
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    client.walk(0, 11)
    client.ok(p9.TLCREATE, client.lcreate_body(11, "suid", mode=0o4755))
    assert not os.stat(host / "export" / "suid").st_mode & (stat.S_ISUID | stat.S_ISGID)


def test_truncate_and_fsync(client, host, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(p9.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    client.walk(0, 10, "hello.txt")
    client.ok(p9.TSETATTR, client.setattr_body(10, p9.ATTR_SIZE, size=5))
    assert (host / "export" / "hello.txt").read_bytes() == b"hello"
    client.lopen(10, O_RDWR)
    client.ok(p9.TFSYNC, struct.pack("<II", 10, 0))
    assert len(synced) == 1
    client.server.flush()                    # the end of a command: open writers are synced
    assert len(synced) == 2


# --- escapes --------------------------------------------------------------------------------

def test_dotdot_at_the_root_stays_in_the_export(client):
    root = client.getattr(0)["qid"]
    assert client.walk(0, 10, "..", "..", "..") == [root] * 3
    client.walk_fails(0, 11, "..", "secret")
    client.walk_fails(0, 11, "..", "export", "..", "..", "secret")
    client.walk_fails(0, 11, "..", "..", "host", "secret")
    client.attach(5, "")                          # nor does the synthetic root lead out
    client.walk_fails(5, 6, "..", "secret")


@pytest.mark.parametrize("link", ["abs", "passwd", "up", "outdir"])
def test_symlinks_are_returned_never_followed(client, link):
    qids = client.walk(0, 10, link)
    assert qids[0][0] == p9.QTSYMLINK
    assert stat.S_ISLNK(client.getattr(10)["mode"])
    assert client.error(p9.TLOPEN, struct.pack("<II", 10, O_RDONLY)) == errno.ELOOP
    target = client.ok(p9.TREADLINK, struct.pack("<I", 10))
    assert SECRET not in target and b"root:" not in target        # only the link's text
    # Through the link as a directory: refused, not followed.
    client.walk_fails(0, 11, link, "secret")
    client.walk_fails(0, 11, link, "passwd")


def test_a_symlink_swapped_in_for_a_walked_directory_is_not_followed(client, host):
    client.walk(0, 10, "dir")
    client.walk(0, 11, "dir", "inner")
    os.rename(host / "export" / "dir", host / "export" / "old")
    os.symlink(str(host), host / "export" / "dir")          # now dir -> outside
    (host / "inner").write_bytes(SECRET)
    assert client.error(p9.TLOPEN, struct.pack("<II", 11, O_RDONLY)) in (errno.ENOTDIR,
                                                                       errno.ELOOP)
    assert client.walk_error(10, 12, "secret") in (errno.ENOTDIR, errno.ELOOP)


@pytest.mark.parametrize("name", ["a/b", "../secret", "/etc/passwd", "x\0y", ""])
def test_names_with_slashes_or_nul_are_refused(client, name):
    assert client.walk_error(0, 10, name) == errno.ENOENT
    for kind, body in ((p9.TLCREATE, client.lcreate_body(0, name)),
                       (p9.TMKDIR, client.mkdir_body(0, name)),
                       (p9.TSYMLINK, client.symlink_body(0, name, "x")),
                       (p9.TRENAMEAT, client.renameat_body(0, "hello.txt", 0, name)),
                       (p9.TUNLINKAT, client.unlinkat_body(0, name))):
        assert client.error(kind, body) == errno.ENOENT


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_names_are_never_made_or_removed(client, name):
    client.walk(0, 10, "dir")
    assert client.error(p9.TMKDIR, client.mkdir_body(10, name)) == errno.EEXIST
    assert client.error(p9.TUNLINKAT, client.unlinkat_body(10, name, p9.AT_REMOVEDIR)) \
        == errno.EEXIST
    assert client.error(p9.TRENAMEAT, client.renameat_body(10, "inner", 0, name)) \
        == errno.EEXIST


def test_links_and_renames_cannot_leave_the_export(client, host):
    before = snapshot_of(host / "ro")
    client.walk(0, 10, "hello.txt")
    client.walk(1, 11, "keep.txt")
    client.walk(1, 12, "sub")
    # A hard link needs a source in the same export: the other export is another world.
    assert client.error(p9.TLINK, client.link_body(0, 11, "stolen")) == errno.EXDEV
    assert client.error(p9.TLINK, client.link_body(12, 10, "leak")) == errno.EROFS
    assert client.error(p9.TRENAME, client.rename_body(10, 12, "moved")) == errno.EXDEV
    assert client.error(p9.TRENAMEAT, client.renameat_body(0, "hello.txt", 1, "x")) \
        == errno.EXDEV
    assert client.error(p9.TRENAME, client.rename_body(0, 0, "x")) == errno.EBUSY
    # A link to a symlink pointing outside is a second symlink, still not followed.
    client.walk(0, 13, "abs")
    client.ok(p9.TLINK, client.link_body(0, 13, "abs2"))
    assert os.path.islink(host / "export" / "abs2")
    assert snapshot_of(host / "ro") == before
    assert (host / "secret").read_bytes() == SECRET


def test_the_root_of_an_export_is_never_removed(client, host):
    client.walk(0, 10)
    assert client.error(p9.TREMOVE, struct.pack("<I", 10)) == errno.EBUSY
    assert 10 not in client.server.fids              # remove(5) clunks, even on failure
    assert (host / "export").is_dir()


def test_device_nodes_are_not_made_and_fifos_never_opened(client, host):
    body = struct.pack("<I", 0) + string("dev") + struct.pack("<IIII", stat.S_IFCHR | 0o666,
                                                              1, 3, 0)
    assert client.error(p9.TMKNOD, body) == errno.EPERM
    fifo = struct.pack("<I", 0) + string("fifo") + struct.pack("<IIII", stat.S_IFIFO | 0o644,
                                                               0, 0, 0)
    client.ok(p9.TMKNOD, fifo)
    client.walk(0, 10, "fifo")
    assert client.error(p9.TLOPEN, struct.pack("<II", 10, O_RDONLY)) == errno.ENXIO
    client.walk(0, 11)
    assert client.error(p9.TLCREATE, client.lcreate_body(11, "fifo", O_WRONLY)) == errno.ENXIO


# --- read-only exports -----------------------------------------------------------------------

def test_a_read_only_export_refuses_every_change(client, host):
    before = snapshot_of(host / "ro")
    client.walk(1, 10, "keep.txt")
    client.walk(1, 11, "sub")
    client.walk(1, 12)
    refused = [
        (p9.TLOPEN, struct.pack("<II", 10, O_WRONLY)),
        (p9.TLOPEN, struct.pack("<II", 10, O_RDONLY | O_TRUNC)),
        (p9.TLCREATE, client.lcreate_body(12, "new")),
        (p9.TMKDIR, client.mkdir_body(1, "new")),
        (p9.TSYMLINK, client.symlink_body(1, "new", "keep.txt")),
        (p9.TMKNOD, struct.pack("<I", 1) + string("new") + struct.pack("<IIII", 0o10644, 0, 0, 0)),
        (p9.TLINK, client.link_body(1, 10, "new")),
        (p9.TRENAME, client.rename_body(10, 1, "new")),
        (p9.TRENAMEAT, client.renameat_body(1, "keep.txt", 1, "new")),
        (p9.TUNLINKAT, client.unlinkat_body(1, "keep.txt")),
        (p9.TUNLINKAT, client.unlinkat_body(1, "sub", p9.AT_REMOVEDIR)),
        (p9.TSETATTR, client.setattr_body(10, p9.ATTR_SIZE, size=0)),
        (p9.TSETATTR, client.setattr_body(10, p9.ATTR_MODE, mode=0o777)),
        (p9.TXATTRCREATE, struct.pack("<I", 10) + string("user.x") + struct.pack("<QI", 1, 0)),
        (p9.TREMOVE, struct.pack("<I", 11)),
    ]
    for kind, body in refused:
        assert client.error(kind, body) == errno.EROFS, kind
    client.walk(1, 13, "keep.txt")
    client.lopen(13, O_RDONLY)
    assert client.read(13) == b"keep\n"
    assert client.error(p9.TWRITE, struct.pack("<IQI", 13, 0, 1) + b"x") == errno.EROFS
    assert snapshot_of(host / "ro") == before


# --- malformed and out-of-order messages -----------------------------------------------------

def test_short_truncated_oversized_and_unknown_messages_get_rlerror(server):
    def answer(message):
        reply = server.handle(message)
        size, kind, tag = struct.unpack_from("<IBH", reply)
        assert size == len(reply) == 11 and kind == p9.RLERROR
        return tag, struct.unpack_from("<I", reply, 7)[0]

    assert answer(b"") == (p9.NOTAG, errno.EINVAL)
    assert answer(b"\x07\0\0") == (p9.NOTAG, errno.EINVAL)
    assert answer(struct.pack("<IBH", 100, p9.TCLUNK, 5) + b"\0" * 4) == (5, errno.EINVAL)
    assert answer(struct.pack("<IBH", 3, p9.TCLUNK, 6) + b"\0" * 4) == (6, errno.EINVAL)
    assert answer(struct.pack("<IBH", 1 << 30, p9.TWRITE, 7)) == (7, errno.EMSGSIZE)
    assert server.handle(struct.pack("<IBH", 7, p9.TCLUNK, 8), too_long=True) \
        == p9.error_reply(8, errno.EMSGSIZE)
    for kind in (0, 1, 99, 112, 114, 124, 126, 255):        # unknown, and 9P2000's own
        assert answer(struct.pack("<IBH", 11, kind, 9) + b"\0" * 4) == (9, errno.EOPNOTSUPP)
    # Fields cut short: a walk promising names it does not carry, a string past the end.
    assert answer(struct.pack("<IBH", 17, p9.TWALK, 10) + struct.pack("<IIH", 0, 1, 3))[1] \
        == errno.EINVAL
    assert answer(struct.pack("<IBH", 13, p9.TATTACH, 11) + struct.pack("<IH", 0, 500))[1] \
        == errno.EINVAL


def test_version_negotiates_msize_and_refuses_tiny_ones(server):
    client = Client(server)
    payload = client.version(msize=1 << 30)
    assert struct.unpack_from("<I", payload)[0] == p9.MAX_MSIZE
    assert client.error(p9.TVERSION, struct.pack("<I", 100) + string("9P2000.L")) \
        == errno.EMSGSIZE
    payload = client.ok(p9.TVERSION, struct.pack("<I", 8192) + string("9P2000.u"))
    assert payload[4:] == string("unknown") and server.msize == 8192


def test_replies_never_exceed_msize_or_the_room_given(client, host):
    (host / "export" / "big").write_bytes(os.urandom(100_000))
    client.version(msize=8192)
    client.attach(0)
    client.walk(0, 10, "big")
    client.lopen(10)
    assert len(client.read(10, count=1 << 20)) == 8192 - 11
    reply = client.raw(p9.TREAD, struct.pack("<IQI", 10, 0, 4096), reply_limit=100)
    assert len(reply) == 100
    reply = client.raw(p9.TREAD, struct.pack("<IQI", 10, 0, 4096), reply_limit=5)
    assert reply[4] == p9.RLERROR


def test_unknown_fids_reused_fids_and_opened_fids(client):
    assert client.error(p9.TGETATTR, struct.pack("<IQ", 77, 0)) == errno.ENOENT
    assert client.error(p9.TCLUNK, struct.pack("<I", 77)) == errno.ENOENT
    assert client.walk_error(77, 78) == errno.ENOENT
    assert client.error(p9.TATTACH, struct.pack("<II", 0, p9.NOFID) + string("")
                        + string("0") + struct.pack("<I", 0)) == errno.EINVAL
    assert client.error(p9.TATTACH, struct.pack("<II", 9, p9.NOFID) + string("")
                        + string("7") + struct.pack("<I", 0)) == errno.ENOENT
    client.walk(0, 10, "hello.txt")
    assert client.walk_error(0, 10, "dir") == errno.EINVAL          # newfid in use
    assert client.error(p9.TREAD, struct.pack("<IQI", 10, 0, 10)) == errno.EINVAL
    client.lopen(10)
    assert client.error(p9.TLOPEN, struct.pack("<II", 10, O_RDONLY)) == errno.EBADF
    assert client.walk_error(10, 11) == errno.EBADF
    assert client.error(p9.TREAD, struct.pack("<IQI", 10, 1 << 63, 10)) == errno.EINVAL
    assert client.walk_error(0, 11, *["dir"] * 17) == errno.EINVAL
    client.clunk(10)
    assert client.error(p9.TREAD, struct.pack("<IQI", 10, 0, 10)) == errno.ENOENT


def test_a_new_version_clunks_every_fid(client):
    client.walk(0, 10, "hello.txt")
    client.lopen(10)
    client.version()
    assert client.server.fids == {} and client.server.open_count == 0


def test_fids_and_open_files_are_capped(client):
    for number in range(100, 100 + p9.MAX_FIDS_PER_EXPORT - 1):     # fid 0 is one already
        client.walk(0, number)
    assert client.walk_error(0, 99) == errno.EMFILE
    for number in range(100, 100 + p9.MAX_OPEN):
        client.lopen(number)
    assert client.error(p9.TLOPEN, struct.pack("<II", 100 + p9.MAX_OPEN, 0)) == errno.EMFILE
    client.attach(5, "1")                     # another export has fids of its own


def test_replacing_the_export_table_closes_the_fids_of_exports_that_went(client, host):
    client.walk(0, 10, "hello.txt")
    client.lopen(10)
    client.walk(1, 11, "keep.txt")
    client.server.set_exports({"1": (str(host / "ro"), True)})
    assert client.error(p9.TREAD, struct.pack("<IQI", 10, 0, 10)) == errno.ENOENT
    assert client.getattr(11)["size"] == 5
    assert client.server.open_count == 0
    assert client.error(p9.TATTACH, struct.pack("<II", 20, p9.NOFID) + string("")
                        + string("0") + struct.pack("<I", 0)) == errno.ENOENT


# --- a storm of random messages --------------------------------------------------------------

NAMES = ["hello.txt", "dir", "inner", "abs", "passwd", "up", "outdir", "..", ".", "", "a/b",
         "/etc/passwd", "new", "x" * 300, "\0", "keep.txt", "sub", "fifo"]
# The fields of each request (f: fid, s: name, w: walk names, 1/4/8: numbers of
# that many bytes, d: data), so that most random messages get past the parser.
LAYOUTS = {
    p9.TVERSION: "4s", p9.TATTACH: "ffss4", p9.TWALK: "ffw", p9.TLOPEN: "f4",
    p9.TLCREATE: "fs444", p9.TREAD: "f84", p9.TWRITE: "f8d", p9.TCLUNK: "f", p9.TREMOVE: "f",
    p9.TGETATTR: "f8", p9.TSETATTR: "f44448888", p9.TREADDIR: "f84", p9.TSTATFS: "f",
    p9.TFSYNC: "f4", p9.TLOCK: "f14884s", p9.TGETLOCK: "f1884s", p9.TXATTRWALK: "ffs",
    p9.TXATTRCREATE: "fs84", p9.TREADLINK: "f", p9.TSYMLINK: "fss4", p9.TMKNOD: "fs4444",
    p9.TMKDIR: "fs44", p9.TLINK: "ffs", p9.TRENAME: "ffs", p9.TRENAMEAT: "fsfs",
    p9.TUNLINKAT: "fs4", p9.TFLUSH: "2", p9.TAUTH: "fss4",
}
KINDS = sorted(set(LAYOUTS) - {p9.TVERSION}) + [0, 7, 112, 255]
NUMBERS = {"1": [0, 1, 255], "2": [0, 1, 0xFFFF], "4": [0, 1, 2, 0o1000, 0o2002, 0x200,
                                                      0o100644, 0o40755, 0xFFFFFFFF],
           "8": [0, 1, 4096, 1 << 62, 1 << 63, (1 << 64) - 1]}


def random_field(rng: random.Random, field: str) -> bytes:
    if field == "f":
        return struct.pack("<I", rng.choice([0, 1, 2, 3, 10, 11, 12, p9.NOFID]))
    if field == "s":
        return string(rng.choice(NAMES + ["0", "1", "9P2000.L"]))
    if field == "w":
        names = [rng.choice(NAMES) for _ in range(rng.choice([0, 1, 2, 3, 17]))]
        return struct.pack("<H", len(names)) + b"".join(map(string, names))
    if field == "d":
        data = rng.randbytes(rng.randrange(0, 64))
        return struct.pack("<I", rng.choice([len(data), len(data) + 5])) + data
    return struct.pack({"1": "<B", "2": "<H", "4": "<I", "8": "<Q"}[field],
                       rng.choice(NUMBERS[field]))


def random_message(rng: random.Random, tag: int) -> bytes:
    """A message of a random type: mostly with the fields of that type (small fids,
    known and hostile names), else random ones; sometimes cut short or bit-flipped."""
    # A version ends the session (every fid goes): rare, so that fids live.
    kind = p9.TVERSION if rng.random() < 0.002 else rng.choice(KINDS)
    if kind in LAYOUTS and rng.random() < 0.8:
        fields = b"".join(random_field(rng, field) for field in LAYOUTS[kind])
    else:
        fields = b"".join(random_field(rng, rng.choice("fsw1248"))
                          for _ in range(rng.randrange(0, 8)))
    message = bytearray(struct.pack("<IBH", 7 + len(fields), kind, tag) + fields)
    mutation = rng.randrange(10)
    if mutation == 0 and len(message) > 7:
        del message[rng.randrange(7, len(message)):]
    elif mutation == 1:
        message[rng.randrange(len(message))] ^= 1 << rng.randrange(8)
    return bytes(message)


def test_a_storm_of_random_messages_never_raises_nor_touches_the_host(client, host, caplog):
    (host / "export" / "fifo").unlink(missing_ok=True)
    outside = {name: (host / name).read_bytes() for name in ("secret",)}
    read_only = snapshot_of(host / "ro")
    rng = random.Random(9)
    caplog.set_level(logging.WARNING, logger="hartvm.virtio")
    for number in range(10000):
        if number % 100 == 0:       # keep fids alive in both exports (in use already: fine)
            for fid, aname in ((2, "0"), (3, "1"), (11, "")):
                client.server.handle(struct.pack("<IBH", 7 + 16 + len(aname), p9.TATTACH, 0)
                                     + struct.pack("<II", fid, p9.NOFID) + string("")
                                     + string(aname) + struct.pack("<I", 0))
        message = random_message(rng, number % 0xFFFF)
        reply = client.server.handle(message, rng.choice([None, 11, 64, 1 << 20]))
        size, kind, reply_tag = struct.unpack_from("<IBH", reply)
        assert size == len(reply) <= client.server.msize
        if len(message) >= 7:
            assert reply_tag == struct.unpack_from("<H", message, 5)[0]
            assert kind == p9.RLERROR or kind == message[4] + 1
        else:
            assert (kind, reply_tag) == (p9.RLERROR, p9.NOTAG)
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    assert {name: (host / name).read_bytes() for name in outside} == outside
    assert snapshot_of(host / "ro") == read_only
    assert sorted(os.listdir(host)) == ["export", "ro", "secret"]


def test_iounit_lets_a_read_or_write_fill_the_message(client, host):
    """Rlopen and Rlcreate offer an iounit of nearly msize (QEMU's get_iounit): Linux
    caps each Tread/Twrite at it (net/9p/client.c), so a small one would chop I/O."""
    client.version(msize=512000)
    client.attach(0, "0")
    client.walk(0, 10, "hello.txt")
    iounit = struct.unpack_from("<I", client.lopen(10), 13)[0]
    client.walk(0, 11)
    created = struct.unpack_from("<I", client.ok(p9.TLCREATE, client.lcreate_body(11, "big")),
                                 13)[0]
    assert iounit == created == 512000 - p9.IOHDRSZ - (512000 - p9.IOHDRSZ) % 4096
    data = os.urandom(iounit)
    assert client.write(11, data) == iounit
    client.walk(0, 12, "big")
    client.lopen(12)
    assert client.read(12, count=iounit) == data


def test_files_open_for_writing_are_known_until_clunked(client):
    """The VMM asks the guest to write its cached pages back only while it holds a
    file open for writing (vmm/shared_folders.py)."""
    assert not client.server.open_for_writing()
    client.walk(0, 10, "hello.txt")
    client.lopen(10)                              # read-only
    client.walk(0, 11)
    client.ok(p9.TLCREATE, client.lcreate_body(11, "new.txt", flags=O_WRONLY))
    assert client.server.open_for_writing()
    client.clunk(11)
    assert not client.server.open_for_writing()
    client.walk(0, 12, "hello.txt")
    client.lopen(12, O_RDWR)
    assert client.server.open_for_writing()
    client.clunk(12)
    client.clunk(10)
    assert not client.server.open_for_writing()
