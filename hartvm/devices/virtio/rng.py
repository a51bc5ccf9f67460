"""virtio-rng, the entropy device (virtio 1.2 section 5.4): one request queue.

The bytes come from a stream: SHA-256 of a seed and a counter, so that runs
stay reproducible. A VM seeds it from the host's entropy (or from the seed
asked for), and gives it a new seed after a restore or a fork, so that
clones never hand their guests the same bytes.
"""

import hashlib

from ..base import saved
from .mmio import Backend

DEVICE_ID = 4
QUEUE_SIZE = 64
MAX_REQUEST = 1 << 16


class DeterministicEntropy:
    def __init__(self, seed: bytes = b"hartvm"):
        self.seed = seed
        self.counter = 0

    def __call__(self, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            out += hashlib.sha256(self.seed + self.counter.to_bytes(8, "little")).digest()
            self.counter += 1
        return bytes(out[:length])


class Rng(Backend):
    device_id = DEVICE_ID
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, seed: bytes = b"hartvm"):
        self.entropy = DeterministicEntropy(seed)

    def reseed(self, seed: bytes) -> None:
        self.entropy = DeterministicEntropy(seed)

    def save(self) -> dict:
        return {"seed": self.entropy.seed, "counter": self.entropy.counter}

    def restore(self, state: dict) -> None:
        self.entropy = DeterministicEntropy(saved(state, "seed", bytes))
        self.entropy.counter = saved(state, "counter", int, 1 << 64)

    def process(self, queue_index, queue, ram) -> bool:
        used = False
        for chain in queue.pending():
            data = self.entropy(min(chain.writable_size, MAX_REQUEST))
            queue.put_used(chain.head, chain.write(ram, data))
            used = True
        return used
