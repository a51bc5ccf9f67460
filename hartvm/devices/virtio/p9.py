"""virtio-9p, the shared-folder device (virtio device id 9): one request queue.

The virtio spec reserves the id but does not describe the device; QEMU's
hw/9pfs/virtio-9p-device.c and Linux's net/9p/trans_virtio.c define it.

Each chain is one 9P message and its answer: the readable part holds the
request, the writable part receives the reply (Linux's zero-copy requests
split a Tread's reply between a small header buffer and the reader's pages,
and a Twrite's request between its header and the writer's pages; both are
contiguous here, as QEMU sees them through its iovecs). The messages go to
a ``P9Server`` (p9server.py), which knows nothing of virtio.

Device id 9 with feature VIRTIO_9P_MOUNT_TAG; the configuration space is
the tag's length (le16) and the tag without a terminating NUL, as QEMU's
``virtio_9p_get_config`` lays it out. The guest mounts it with
``mount -t 9p -o trans=virtio,version=9p2000.L TAG DIR``.

A snapshot keeps the negotiated ``msize`` only: host file descriptors do
not survive one, so a restored device answers fids of before with ENOENT
(the export table is the VM's to set again).
"""

from ..base import saved
from .mmio import Backend
from .p9server import HEADER, MAX_MSIZE, MIN_MSIZE, P9Server

DEVICE_ID = 9
F_MOUNT_TAG = 1 << 0
# Linux's 9p transport needs a descriptor per page of a 500 KiB message plus
# two (net/9p/trans_virtio.c, VIRTQUEUE_NUM); a larger ring leaves it room.
QUEUE_SIZE = 1024
MAX_TAG = 255                   # QEMU's MAX_TAG_LEN - 1


class VirtioP9(Backend):
    device_id = DEVICE_ID
    features = F_MOUNT_TAG
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, tag: str = "hartvm"):
        encoded = tag.encode()
        if not 0 < len(encoded) <= MAX_TAG:
            raise ValueError(f"9p mount tag {tag!r}: 1 to {MAX_TAG} bytes")
        self.tag = encoded
        self.server = P9Server()

    def config(self) -> bytes:
        return len(self.tag).to_bytes(2, "little") + self.tag

    def process(self, queue_index, queue, ram) -> bool:
        used = False
        for chain in queue.pending():
            queue.put_used(chain.head, self._answer(chain, ram))
            used = True
        return used

    def _answer(self, chain, ram) -> int:
        """Serve one chain; the bytes of reply written."""
        total = sum(length for _, length in chain.readable)
        limit = self.server.msize
        if total > limit:
            # Read no more than the header: the message is refused for its size.
            request, too_long = self._read_prefix(chain, ram, HEADER.size), True
        else:
            request, too_long = chain.read(ram, limit=limit), False
        room = chain.writable_size
        reply = self.server.handle(request, room, too_long)
        if len(reply) > room:
            # Not even an Rlerror fits: the guest gave no room to answer in.
            return 0
        return chain.write(ram, reply)

    @staticmethod
    def _read_prefix(chain, ram, size: int) -> bytes:
        out = bytearray()
        for paddr, length in chain.readable:
            if len(out) >= size:
                break
            out += ram.read(paddr, min(length, size - len(out)))
        return bytes(out)

    def reset(self) -> None:
        self.server.reset()

    def save(self) -> dict:
        return {"msize": self.server.msize}

    def restore(self, state: dict) -> None:
        msize = saved(state, "msize", int, MAX_MSIZE + 1)
        if msize < MIN_MSIZE:
            raise ValueError(f"msize {msize} is below {MIN_MSIZE}")
        self.server.reset()
        self.server.msize = msize

    def close(self) -> None:
        self.server.close()
