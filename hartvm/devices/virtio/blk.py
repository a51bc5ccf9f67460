"""virtio-blk over a raw image file (virtio 1.2 section 5.2): one request queue.

Requests: a 16-byte header (type, reserved, sector) in the readable part,
data, and a status byte at the end of the writable part. Reads and writes
go to the host file with pread/pwrite; FLUSH is an fsync of the file. A
request outside the disk, or a write to a read-only disk, gets IOERR.
"""

import os
import struct

from .mmio import Backend

DEVICE_ID = 2
QUEUE_SIZE = 128
SECTOR = 512
F_RO = 1 << 5
F_FLUSH = 1 << 9
T_IN, T_OUT, T_FLUSH, T_GET_ID = 0, 1, 4, 8
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
MAX_REQUEST = 4 << 20


class Block(Backend):
    device_id = DEVICE_ID
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, path: str, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        self.fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        self.size = os.fstat(self.fd).st_size // SECTOR * SECTOR
        self.features = F_FLUSH | (F_RO if readonly else 0)

    def config(self) -> bytes:
        return struct.pack("<Q", self.size // SECTOR)     # capacity, in 512-byte sectors

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
        status = S_OK
        reply = b""
        if kind == T_IN:
            if offset + data_size > self.size or data_size > MAX_REQUEST:
                status = S_IOERR
            else:
                reply = os.pread(self.fd, data_size, offset)
        elif kind == T_OUT:
            payload = request[16:]
            if self.readonly or offset + len(payload) > self.size:
                status = S_IOERR
            else:
                os.pwrite(self.fd, payload, offset)
        elif kind == T_FLUSH:
            if not self.readonly:
                os.fsync(self.fd)
        elif kind == T_GET_ID:
            reply = os.path.basename(self.path).encode()[:20].ljust(min(20, data_size), b"\0")
        else:
            status = S_UNSUPP
        reply = reply[:data_size].ljust(data_size, b"\0") if kind in (T_IN, T_GET_ID) else b""
        return chain.write(ram, reply + bytes([status])) if kind in (T_IN, T_GET_ID) \
            else self._status_only(chain, ram, status)

    @staticmethod
    def _status_only(chain, ram, status) -> int:
        """Write just the status byte, at the end of the writable part."""
        paddr, length = chain.writable[-1]
        ram.write(paddr + length - 1, bytes([status]))
        return 1

    def close(self) -> None:
        os.close(self.fd)
