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
ID_BYTES = 20
F_SIZE_MAX = 1 << 1
F_SEG_MAX = 1 << 2
SIZE_MAX = 64 << 10                 # bytes per buffer, and buffers per request below,
SEG_MAX = MAX_REQUEST // SIZE_MAX   # so that the driver never sends more than MAX_REQUEST


class Block(Backend):
    device_id = DEVICE_ID
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, path: str, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        self.fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        self.size = os.fstat(self.fd).st_size // SECTOR * SECTOR
        self.features = F_FLUSH | F_SIZE_MAX | F_SEG_MAX | (F_RO if readonly else 0)

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
        if kind == T_IN:
            if offset + data_size > self.size or data_size > MAX_REQUEST:
                return self._status(chain, ram, S_IOERR)
            reply = os.pread(self.fd, data_size, offset)
        elif kind == T_OUT:
            payload = request[16:]
            if self.readonly or offset + len(payload) > self.size:
                return self._status(chain, ram, S_IOERR)
            os.pwrite(self.fd, payload, offset)
        elif kind == T_FLUSH:
            if not self.readonly:
                os.fsync(self.fd)
        elif kind == T_GET_ID:
            if data_size < ID_BYTES:
                return self._status(chain, ram, S_IOERR)
            reply = os.path.basename(self.path).encode()[:ID_BYTES].ljust(ID_BYTES, b"\0")
        else:
            return self._status(chain, ram, S_UNSUPP)
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

    def close(self) -> None:
        os.close(self.fd)
