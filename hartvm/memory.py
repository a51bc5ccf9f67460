"""Guest RAM: a private mmap seen as numpy arrays.

The hart reads and writes RAM through four signed views of one buffer
(``m8``, ``m16``, ``m32``, ``m64``), which numba indexes directly. Host-side
accessors here check every physical range before touching the buffer.

The mapping is private: anonymous for a booted machine, or a snapshot's RAM
file mapped copy-on-write for a restored one (pages are read from the file
when the guest first touches them, and a write copies only that page).
Untouched pages cost no host memory, and the mapping reserves no swap
(``MAP_NORESERVE``), so a guest may have more RAM than the host has free as
long as it does not touch it all. The mapping is marked mergeable, so that
the host's KSM (when enabled in /sys/kernel/mm/ksm/run) can share identical
pages between VMs.
"""

import mmap
import os

import numpy as np

PAGE_SIZE = 4096
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)   # Linux's value; Python lacks the name


class GuestMemoryError(ValueError):
    """A host-side access that does not fit in guest RAM."""


class RAM:
    def __init__(self, base: int, size: int, file_fd: int | None = None):
        """``file_fd``: a file of ``size`` bytes to start from (mapped copy-on-write)."""
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"RAM size must be a positive multiple of {PAGE_SIZE} bytes")
        self.base = base
        self.size = size
        flags = mmap.MAP_PRIVATE | MAP_NORESERVE
        if file_fd is None:
            self._mmap = mmap.mmap(-1, size, flags=flags | mmap.MAP_ANONYMOUS)
        else:
            if os.fstat(file_fd).st_size != size:
                raise ValueError(f"RAM file is not {size} bytes long")
            self._mmap = mmap.mmap(file_fd, size, flags=flags,
                                   prot=mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            self._mmap.madvise(mmap.MADV_MERGEABLE)
        except OSError:
            pass    # a kernel without KSM: nothing to share
        self.m8 = np.frombuffer(self._mmap, dtype=np.int8)
        # Host-side copies go through a memoryview: a plain memcpy, ten times
        # cheaper than numpy's int8 slice assignment for a page of device data.
        self._bytes = memoryview(self._mmap)
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
        return self._bytes[offset:offset + length].tobytes()

    def write(self, paddr: int, data) -> None:
        """Copy ``data`` (any contiguous buffer: bytes, a memoryview) to ``paddr``."""
        data = memoryview(data).cast("B")
        offset = self._offset(paddr, len(data))
        self._bytes[offset:offset + len(data)] = data

    def read_u64(self, paddr: int) -> int:
        return int.from_bytes(self.read(paddr, 8), "little")

    def write_u64(self, paddr: int, value: int) -> None:
        self.write(paddr, (value & (2**64 - 1)).to_bytes(8, "little"))
