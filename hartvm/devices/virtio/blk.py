"""virtio-blk over a raw image file (virtio 1.2 section 5.2): one request queue.

Requests: a 16-byte header (type, reserved, sector) in the readable part,
data, and a status byte at the end of the writable part. Reads and writes
go to the host file with pread/pwrite; FLUSH is an fsync of the file. A
request outside the disk, a write to a read-only disk, or a host I/O error
gets IOERR.

Copy-on-write overlay (like QEMU's -snapshot, but simpler than qcow2): after
``use_overlay`` every write goes to a sparse overlay file the size of the
disk, so that forked or restored VMs share one base image that is never
written again (its fd is reopened read-only). The disk is cut into clusters
of 4 KiB; an in-memory bitmap (cluster c is bit c % 8 of byte c // 8) says
which clusters the overlay holds. Reads take those from the overlay and the
rest from the base. A write to a cluster the overlay does not hold yet first
copies the base cluster there, unless the write covers all of it. The bitmap
is not stored in the overlay file: the file means something only together
with ``written_clusters``, which is what a snapshot saves.
"""

import copy
import errno
import logging
import os
import struct

from ...errors import HartvmError
from ...hostfile import open_checked
from .mmio import Backend

log = logging.getLogger("hartvm.virtio")

DEVICE_ID = 2
QUEUE_SIZE = 128
SECTOR = 512
F_RO = 1 << 5
F_FLUSH = 1 << 9
T_IN, T_OUT, T_FLUSH, T_GET_ID = 0, 1, 4, 8
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
MAX_REQUEST = 4 << 20
ID_BYTES = 20
F_SIZE_MAX = 1 << 1
F_SEG_MAX = 1 << 2
SIZE_MAX = 64 << 10                 # bytes per buffer, and buffers per request below,
SEG_MAX = MAX_REQUEST // SIZE_MAX   # so that the driver never sends more than MAX_REQUEST
CLUSTER = 4096                      # overlay granularity, in bytes
COPY_RUN = 256                      # clusters per pread in copy_overlay, export: 1 MiB at a time


class Block(Backend):
    device_id = DEVICE_ID
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, path: str, readonly: bool = False, overlay: str | None = None,
                 size: int | None = None):
        """``overlay``: writes go to this new file from the start, and the base
        is opened read-only (an image's root filesystem, shared by every VM).
        ``size``, with an overlay: the disk is this large, the bytes past the
        base's end reading as zeros until written (a root disk larger than
        its image, grown by the guest)."""
        self.path = path
        self.readonly = readonly
        # The base image: a regular file or a block device (never a FIFO, a
        # directory or /dev/zero), of at least one sector.
        writable = not readonly and overlay is None
        self.fd = open_checked(path, "drive", os.O_RDWR if writable else os.O_RDONLY,
                               block_device=True)
        self.size = self.base_size = os.lseek(self.fd, 0, os.SEEK_END) // SECTOR * SECTOR
        if self.size == 0:
            os.close(self.fd)
            raise HartvmError(f"drive {path}: empty (a disk needs at least {SECTOR} bytes)")
        if size is not None and overlay is not None and size > self.size:
            self.size = size // SECTOR * SECTOR
        self.features = F_FLUSH | F_SIZE_MAX | F_SEG_MAX | (F_RO if readonly else 0)
        self.cluster_count = -(-self.size // CLUSTER)
        self._overlay_fd = None
        self._overlay_path = None
        self._clusters = None       # the bitmap of clusters in the overlay, while there is one
        if overlay is not None:
            try:
                self.use_overlay(overlay)
            except BaseException:
                os.close(self.fd)
                raise

    # --- overlay --------------------------------------------------------------
    @property
    def overlay_path(self) -> str | None:
        """The file that receives writes, or None while writes go to the base."""
        return self._overlay_path

    @property
    def written_clusters(self) -> bytes | None:
        """A copy of the overlay's cluster bitmap, or None without an overlay."""
        return None if self._clusters is None else bytes(self._clusters)

    def use_overlay(self, overlay_path: str, clusters: bytes | None = None) -> None:
        """Send writes to ``overlay_path`` from now on; the base is no longer written.

        ``clusters`` None: the overlay starts empty (the file is created, or
        truncated, to the disk's size). Otherwise the file exists and holds
        these clusters, as ``copy_overlay`` and ``written_clusters`` left
        them; both are checked, since they may come from an untrusted
        snapshot. A read-only disk is never written, so it needs no overlay
        and refuses one (ValueError).
        """
        if self.readonly:
            raise ValueError(f"{self.path} is read-only: it needs no overlay")
        bitmap_size = -(-self.cluster_count // 8)
        if clusters is not None:
            bitmap = bytearray(clusters)
            if len(bitmap) != bitmap_size:
                raise ValueError(f"overlay bitmap of {len(bitmap)} bytes for {self.path}: "
                                 f"{self.cluster_count} clusters need {bitmap_size}")
            if bitmap and bitmap[-1] >> (self.cluster_count - 8 * (bitmap_size - 1)):
                raise ValueError("overlay bitmap marks clusters past the end of the disk")
            fd = os.open(overlay_path, os.O_RDWR)           # FileNotFoundError if missing
        else:
            bitmap = bytearray(bitmap_size)
            fd = os.open(overlay_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._refuse_disk_file(fd, overlay_path)
            if clusters is not None and os.fstat(fd).st_size != self.size:
                raise ValueError(f"overlay {overlay_path} is {os.fstat(fd).st_size} bytes, "
                                 f"the disk {self.size}")
            base_fd = self._read_only_base()
            if clusters is None:
                os.ftruncate(fd, 0)                         # drop old contents, keep it sparse
                os.ftruncate(fd, self.size)
        except BaseException:
            os.close(fd)
            raise
        if base_fd != self.fd:
            os.close(self.fd)
            self.fd = base_fd
        if self._overlay_fd is not None:
            os.close(self._overlay_fd)
        self._overlay_fd, self._overlay_path, self._clusters = fd, overlay_path, bitmap

    def copy_overlay(self, destination_path: str) -> None:
        """Write a sparse copy of the overlay (its clusters only) to ``destination_path``."""
        if self._clusters is None:
            raise ValueError(f"{self.path} has no overlay to copy")
        fd = os.open(destination_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            self._refuse_disk_file(fd, destination_path)   # before truncating it
            os.ftruncate(fd, 0)
            for first, count in self._overlay_runs():
                offset = first * CLUSTER
                length = min(count * CLUSTER, self.size - offset)
                _pwrite_all(fd, _pread_exact(self._overlay_fd, length, offset), offset)
            os.ftruncate(fd, self.size)
        finally:
            os.close(fd)

    def export(self, destination_path: str) -> None:
        """Write the disk as the guest sees it now (base and overlay) to a new sparse
        file: what a snapshot keeps of a drive."""
        fd = os.open(destination_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for offset in range(0, self.size, COPY_RUN * CLUSTER):
                data = self._read(offset, min(COPY_RUN * CLUSTER, self.size - offset))
                start = None          # of a run of clusters that are not all zeros
                for at in range(0, len(data) + CLUSTER, CLUSTER):
                    piece = data[at:at + CLUSTER]
                    if piece and piece.count(0) != len(piece):
                        start = at if start is None else start
                    elif start is not None:               # zeros stay a hole
                        _pwrite_all(fd, data[start:at], offset + start)
                        start = None
            os.ftruncate(fd, self.size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def fork_overlay(self, new_path: str) -> None:
        """Go on with an overlay of this process's own, e.g. in a child after os.fork().

        With an overlay in use, the new one starts as a copy of it (same
        clusters); without, it starts empty over the base. Afterwards only
        ``new_path`` receives writes; the old overlay is closed here, not
        deleted. Whoever else uses the old overlay (the parent) must not
        write it until this returns, or the copy mixes two states; and a
        parent without an overlay must take one too, since the base must
        not change under the child.
        """
        if self._clusters is None:
            self.use_overlay(new_path)
        else:
            self.copy_overlay(new_path)
            self.use_overlay(new_path, bytes(self._clusters))

    def duplicate(self) -> "Block":
        """A second Block over the same files with descriptors of its own, as a
        child after os.fork() has: it must take an overlay of its own
        (``fork_overlay``) before it writes."""
        twin = copy.copy(self)
        twin.fd = os.dup(self.fd)
        if self._overlay_fd is not None:
            twin._overlay_fd = os.dup(self._overlay_fd)
            twin._clusters = bytearray(self._clusters)
        twin.transport = None
        return twin

    def _refuse_disk_file(self, fd: int, path: str) -> None:
        """An overlay, or a copy of one, must be neither the base nor the current overlay."""
        stat = os.fstat(fd)
        for disk_fd in (self.fd, self._overlay_fd):
            if disk_fd is not None and os.path.samestat(stat, os.fstat(disk_fd)):
                raise ValueError(f"{path} is a file this disk reads: base or current overlay")

    def _read_only_base(self) -> int:
        """A read-only fd of the base: the current one once an overlay is in use."""
        if self._overlay_fd is not None:
            return self.fd
        fd = os.open(self.path, os.O_RDONLY)
        if not os.path.samestat(os.fstat(fd), os.fstat(self.fd)):
            os.close(fd)
            raise ValueError(f"{self.path} was replaced since the disk was opened")
        return fd

    def _holds(self, cluster: int) -> bool:
        return bool(self._clusters[cluster >> 3] >> (cluster & 7) & 1)

    def _overlay_runs(self):
        """(first cluster, count) for runs of up to COPY_RUN clusters held by the overlay."""
        first = count = 0
        for index, byte in enumerate(self._clusters):
            if not byte:                                    # skip empty stretches quickly
                continue
            for bit in range(8):
                if not byte >> bit & 1:
                    continue
                cluster = 8 * index + bit
                if count and cluster == first + count and count < COPY_RUN:
                    count += 1
                else:
                    if count:
                        yield first, count
                    first, count = cluster, 1
        if count:
            yield first, count

    # --- disk access ----------------------------------------------------------
    def _read(self, offset: int, size: int) -> bytes:
        """The disk's bytes [offset, offset + size), which the caller checked are inside it."""
        if self._clusters is None:
            return _pread_exact(self.fd, size, offset)
        parts = []
        end = offset + size
        while offset < end:
            # the longest stretch from offset whose clusters all come from the same file
            in_overlay = self._holds(offset // CLUSTER)
            stop = min((offset // CLUSTER + 1) * CLUSTER, end)
            while stop < end and self._holds(stop // CLUSTER) == in_overlay:
                stop = min(stop + CLUSTER, end)
            parts.append(_pread_exact(self._overlay_fd, stop - offset, offset) if in_overlay
                         else self._read_base(stop - offset, offset))
            offset = stop
        return b"".join(parts)

    def _read_base(self, size: int, offset: int) -> bytes:
        """The base's bytes [offset, offset + size); past its end (a disk made
        larger than its base), zeros."""
        inside = max(0, min(size, self.base_size - offset))
        data = _pread_exact(self.fd, inside, offset) if inside else b""
        return data + bytes(size - inside)

    def _write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (inside the disk): to the overlay if there is one."""
        if self._clusters is None:
            _pwrite_all(self.fd, data, offset)
            return
        if not data:
            return
        end = offset + len(data)
        first, last = offset // CLUSTER, (end - 1) // CLUSTER
        for cluster in {first, last}:       # only these can be partly covered
            start = cluster * CLUSTER
            covered = offset <= start and end >= min(start + CLUSTER, self.size)
            if not covered and not self._holds(cluster):
                length = min(CLUSTER, self.size - start)
                _pwrite_all(self._overlay_fd, self._read_base(length, start), start)
        _pwrite_all(self._overlay_fd, data, offset)
        for cluster in range(first, last + 1):
            self._clusters[cluster >> 3] |= 1 << (cluster & 7)

    # --- requests -------------------------------------------------------------
    def config(self) -> bytes:
        # capacity (512-byte sectors), size_max, seg_max (virtio 1.2, 5.2.4)
        return struct.pack("<QII", self.size // SECTOR, SIZE_MAX, SEG_MAX)

    def process(self, queue_index, queue, ram) -> bool:
        used = False
        for chain in queue.pending():
            written = self._request(chain, ram)
            queue.put_used(chain.head, written)
            used = True
        return used

    def _request(self, chain, ram) -> int:
        request = chain.read(ram, limit=16 + MAX_REQUEST)
        if len(request) < 16 or chain.writable_size < 1:
            return 0    # no room for a status: nothing can be reported
        kind, _, sector = struct.unpack_from("<IIQ", request)
        data_size = chain.writable_size - 1
        offset = sector * SECTOR
        reply = None    # data for the writable part, before the status byte
        try:
            if kind == T_IN:
                if offset + data_size > self.size or data_size > MAX_REQUEST:
                    return self._status(chain, ram, S_IOERR)
                reply = self._read(offset, data_size)
            elif kind == T_OUT:
                payload = request[16:]
                if self.readonly or offset + len(payload) > self.size:
                    return self._status(chain, ram, S_IOERR)
                self._write(offset, payload)
            elif kind == T_FLUSH:
                self.sync()
            elif kind == T_GET_ID:
                if data_size < ID_BYTES:
                    return self._status(chain, ram, S_IOERR)
                reply = os.path.basename(self.path).encode()[:ID_BYTES].ljust(ID_BYTES, b"\0")
            else:
                return self._status(chain, ram, S_UNSUPP)
        except OSError as error:        # the host's disk failed: the guest sees an I/O error
            log.warning("virtio-blk %s: %s", self.path, error)
            return self._status(chain, ram, S_IOERR)
        if reply is None:
            return self._status(chain, ram, S_OK)
        written = chain.write(ram, reply)
        self._status(chain, ram, S_OK)
        return written + 1

    @staticmethod
    def _status(chain, ram, status) -> int:
        """Write the status byte: the last byte of the chain's writable part."""
        for paddr, length in reversed(chain.writable):
            if length:
                ram.write(paddr + length - 1, bytes([status]))
                return 1
        return 0

    def sync(self) -> None:
        """Make what the guest wrote durable: an fsync of the file that takes the
        writes (the overlay, if there is one). A FLUSH request and the end of a
        VM both come here."""
        if not self.readonly and self.fd is not None:
            os.fsync(self.fd if self._overlay_fd is None else self._overlay_fd)

    def close(self) -> None:
        """Close the base and the overlay; closing twice does nothing."""
        for fd in (self.fd, self._overlay_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self._overlay_fd = None


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``; a file that got shorter under us is an I/O error."""
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise OSError(errno.EIO, f"short read: {len(data)} of {size} bytes at {offset}")
    return data


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset``, going on after short writes."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if not written:
            raise OSError(errno.EIO, f"no progress writing at {offset}")
        view, offset = view[written:], offset + written
