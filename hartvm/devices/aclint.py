"""The CLINT / ACLINT of the virt board: MSWI (msip) and MTIMER (mtimecmp, mtime).

Layout as SiFive's CLINT, which QEMU's virt board uses: ``msip`` of hart N
at 4*N, ``mtimecmp`` of hart N at 0x4000 + 8*N, ``mtime`` at 0xBFF8. The
comparison of mtime with mtimecmp happens inside the hart's run loop (the
timer is the one device on the hot path); this device only reads and
writes the hart state that holds them.
"""

from ..cpu.csr import mtime
from ..cpu.layout import (CSR, CYCLE, CYCLES_PER_TICK, IRQ_MSI, IRQ_MTI, MIP, MIP_MSIP, MTIMECMP,
                          TIME_OFFSET)
from .base import Device

MSIP_BASE = 0x0000
MTIMECMP_BASE = 0x4000
MTIME = 0xBFF8


class ACLINT(Device):
    access_sizes = frozenset({4, 8})

    def __init__(self, harts):
        super().__init__()
        self.harts = harts  # state arrays, indexed by hart id

    def _mtime(self):
        return int(mtime(self.harts[0])) & (2**64 - 1)

    def read(self, offset, size):
        if offset < MTIMECMP_BASE:
            hart = offset // 4
            if hart < len(self.harts) and size == 4 and offset % 4 == 0:
                return 1 if self.harts[hart][CSR + MIP] & MIP_MSIP else 0
            return self.unknown("read", offset)
        if offset >= MTIME and offset + size <= MTIME + 8:
            return self._mtime() >> (8 * (offset - MTIME))
        hart, within = divmod(offset - MTIMECMP_BASE, 8)
        if hart < len(self.harts) and within + size <= 8:
            return (int(self.harts[hart][MTIMECMP]) & (2**64 - 1)) >> (8 * within)
        return self.unknown("read", offset)

    def write(self, offset, size, value):
        if offset < MTIMECMP_BASE:
            hart = offset // 4
            if hart < len(self.harts) and size == 4 and offset % 4 == 0:
                state = self.harts[hart]
                if value & 1:
                    state[CSR + MIP] |= MIP_MSIP
                else:
                    state[CSR + MIP] &= ~MIP_MSIP
            else:
                self.unknown("write", offset)
            return
        if offset >= MTIME and offset + size <= MTIME + 8:
            new = _merge(self._mtime(), offset - MTIME, size, value)
            for state in self.harts:
                state[TIME_OFFSET] = _signed(new - int(state[CYCLE]) // CYCLES_PER_TICK)
            return
        hart, within = divmod(offset - MTIMECMP_BASE, 8)
        if hart < len(self.harts) and within + size <= 8:
            state = self.harts[hart]
            old = int(state[MTIMECMP]) & (2**64 - 1)
            state[MTIMECMP] = _signed(_merge(old, within, size, value))
            return
        self.unknown("write", offset)

    def fdt_node(self, tree, region) -> None:
        """Each hart's software and timer interrupts, in hart order."""
        node = tree.device("clint", region, ("sifive,clint0", "riscv,clint0"))
        node.set("interrupts-extended", tree.per_hart(IRQ_MSI, IRQ_MTI))


def _merge(old: int, byte_offset: int, size: int, value: int) -> int:
    """``old`` with ``size`` bytes at ``byte_offset`` replaced by ``value``."""
    shift = 8 * byte_offset
    mask = ((1 << (8 * size)) - 1) << shift
    return (old & ~mask) | ((value << shift) & mask)


def _signed(value: int) -> int:
    value &= 2**64 - 1
    return value - 2**64 if value >= 2**63 else value
