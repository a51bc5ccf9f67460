"""Guest RAM: an anonymous mmap seen as numpy arrays.

The hart reads and writes RAM through four signed views of one buffer
(``m8``, ``m16``, ``m32``, ``m64``), which numba indexes directly. The
mapping is private and untouched pages cost no host memory, so a large
``--memory`` is cheap until the guest uses it. Host-side accessors here
check every physical range before touching the buffer.
"""

import mmap

import numpy as np

PAGE_SIZE = 4096


class GuestMemoryError(ValueError):
    """A host-side access that does not fit in guest RAM."""


class RAM:
    def __init__(self, base: int, size: int):
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"RAM size must be a positive multiple of {PAGE_SIZE} bytes")
        self.base = base
        self.size = size
        self._mmap = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.m8 = np.frombuffer(self._mmap, dtype=np.int8)
        self.m16 = self.m8.view(np.int16)
        self.m32 = self.m8.view(np.int32)
        self.m64 = self.m8.view(np.int64)

    def contains(self, paddr: int, length: int = 1) -> bool:
        return self.base <= paddr and paddr + length <= self.base + self.size

    def _offset(self, paddr: int, length: int) -> int:
        if length < 0 or not self.contains(paddr, length):
            raise GuestMemoryError(
                f"{length} bytes at {paddr:#x} are outside RAM "
                f"({self.base:#x}-{self.base + self.size:#x})")
        return paddr - self.base

    def read(self, paddr: int, length: int) -> bytes:
        offset = self._offset(paddr, length)
        return self.m8[offset:offset + length].tobytes()

    def write(self, paddr: int, data: bytes) -> None:
        offset = self._offset(paddr, len(data))
        self.m8[offset:offset + len(data)] = np.frombuffer(data, dtype=np.int8)

    def read_u64(self, paddr: int) -> int:
        return int.from_bytes(self.read(paddr, 8), "little")

    def write_u64(self, paddr: int, value: int) -> None:
        self.write(paddr, (value & (2**64 - 1)).to_bytes(8, "little"))
