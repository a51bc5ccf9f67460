"""The MMIO bus: physical address ranges mapped to devices.

``attach(base, size, device)`` maps the half-open range [base, base+size)
and ``detach(base)`` unmaps it. Ranges may not overlap and may not be
empty. The bus turns an MMIO exit of the run loop into a device call with
an offset inside the device; an address no device claims, or an access
size the device does not accept, is reported back as an access fault for
the guest.
"""

import bisect


class Bus:
    def __init__(self):
        self._bases: list[int] = []
        self._entries: list[tuple[int, int, object]] = []

    def attach(self, base: int, size: int, device) -> None:
        if size <= 0:
            raise ValueError(f"cannot attach {type(device).__name__} with size {size}")
        if base < 0 or base + size > 2**64:
            raise ValueError(f"range {base:#x}+{size:#x} is outside the physical address space")
        index = bisect.bisect_left(self._bases, base)
        if index > 0:
            prev_base, prev_size, prev = self._entries[index - 1]
            if prev_base + prev_size > base:
                raise ValueError(f"{type(device).__name__} at {base:#x} overlaps {type(prev).__name__}")
        if index < len(self._entries) and base + size > self._entries[index][0]:
            raise ValueError(f"{type(device).__name__} at {base:#x} overlaps "
                             f"{type(self._entries[index][2]).__name__}")
        self._bases.insert(index, base)
        self._entries.insert(index, (base, size, device))

    def detach(self, base: int):
        """Unmap the range that starts at ``base``; returns its device (KeyError if none)."""
        index = bisect.bisect_left(self._bases, base)
        if index == len(self._bases) or self._bases[index] != base:
            raise KeyError(f"no device at {base:#x}")
        del self._bases[index]
        return self._entries.pop(index)[2]

    def find(self, paddr: int, size: int):
        """(device, offset) for an access of ``size`` bytes at ``paddr``, or (None, 0)."""
        index = bisect.bisect_right(self._bases, paddr) - 1
        if index < 0:
            return None, 0
        base, length, device = self._entries[index]
        offset = paddr - base
        if offset + size > length or size not in device.access_sizes:
            return None, 0
        return device, offset

    def read(self, paddr: int, size: int):
        """The value read, or None when the access faults."""
        device, offset = self.find(paddr, size)
        if device is None:
            return None
        return device.read(offset, size) & ((1 << (8 * size)) - 1)

    def write(self, paddr: int, size: int, value: int) -> bool:
        """False when the access faults."""
        device, offset = self.find(paddr, size)
        if device is None:
            return False
        device.write(offset, size, value & ((1 << (8 * size)) - 1))
        return True
