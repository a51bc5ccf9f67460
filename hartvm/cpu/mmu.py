"""Address translation and guest RAM access from inside the run loop.

``translate`` maps a virtual address to a physical one. This hart supports
only the Bare translation mode of ``satp`` so far (a legal WARL choice,
privileged spec 4.1.11), so every address maps to itself; Sv39/Sv48 plug in
here. Guest RAM is one byte buffer seen through four signed views
(``m8``..``m64``); an access wholly inside RAM is done here, anything else
leaves the run loop as an MMIO exit for the bus to handle. The RAM base
is passed down as a plain value rather than read from ``h``: a value read
from ``h`` must be read again after every register write (they might
alias), and this check runs for every load, store and fetch.
"""

from .jit import jit, jit_inline


ACCESS_FETCH = 0
ACCESS_LOAD = 1
ACCESS_STORE = 2


@jit_inline
def translate(h, vaddr, access):
    """Physical address for ``vaddr`` and a page-fault cause, or -1 for none."""
    return vaddr, -1


@jit_inline
def ram_offset(m8, ram_base, paddr, size):
    """Offset of ``paddr`` in RAM (``m8`` at ``ram_base``) when the whole access fits, else -1."""
    offset = paddr - ram_base
    if offset < 0 or offset > m8.size - size:
        return -1
    return offset


@jit_inline
def ram_read(m8, m16, m32, m64, offset, size):
    """Sign-extended value of ``size`` bytes at RAM ``offset`` (any alignment)."""
    if offset & (size - 1) == 0:
        if size == 8:
            return m64[offset >> 3]
        if size == 4:
            return m32[offset >> 2]
        if size == 2:
            return m16[offset >> 1]
        return m8[offset]
    # Misaligned accesses are done in hardware, as QEMU does for RAM.
    value = 0
    for i in range(size):
        value |= (m8[offset + i] & 0xFF) << (8 * i)
    shift = 64 - 8 * size
    return (value << shift) >> shift


@jit_inline
def ram_write(m8, m16, m32, m64, offset, size, value):
    """Store the low ``size`` bytes of ``value`` at RAM ``offset`` (any alignment)."""
    if offset & (size - 1) == 0:
        if size == 8:
            m64[offset >> 3] = value
        elif size == 4:
            m32[offset >> 2] = ((value & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000
        elif size == 2:
            m16[offset >> 1] = ((value & 0xFFFF) ^ 0x8000) - 0x8000
        else:
            m8[offset] = ((value & 0xFF) ^ 0x80) - 0x80
        return
    for i in range(size):
        m8[offset + i] = (((value >> (8 * i)) & 0xFF) ^ 0x80) - 0x80
