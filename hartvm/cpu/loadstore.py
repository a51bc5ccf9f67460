"""LOAD, STORE and AMO: memory instructions (ISA spec 2.6, 5.3, chapter 14 "A").

Loads and stores to RAM complete here. Loads and stores to any other
physical address stop the run loop with an MMIO exit that describes the
access; the machine hands it to the bus and completes the instruction.
Atomics work only on RAM: an AMO or LR/SC elsewhere is an access fault, and
a misaligned one is an address-misaligned fault (ISA spec 14.4).
Each function returns the next pc, or an odd pc (pc | 1) to leave the loop.
"""

from .jit import jit, jit_inline

from .alu import ltu, sext32, illegal
from .layout import (
    CAUSE_LOAD_ACCESS, CAUSE_LOAD_MISALIGNED, CAUSE_STORE_ACCESS,
    CAUSE_STORE_MISALIGNED, EXIT_FLAGS, EXIT_HTIF, EXIT_ILEN, EXIT_MMIO,
    EXIT_PADDR, EXIT_RD, EXIT_VADDR, EXIT_REASON, EXIT_SIZE, EXIT_VALUE, MMIO_FP,
    MMIO_UNSIGNED, MMIO_WRITE, RESERVATION, WATCH_PADDR,
)
from .mmu import ACCESS_LOAD, ACCESS_STORE, ram_offset, ram_read, ram_write, translate
from .trap import take_trap


@jit_inline
def mmio_exit(h, vaddr, paddr, size, value, rd, flags, pc, ilen):
    """Describe an MMIO access for the machine and leave the run loop at ``pc``."""
    h[EXIT_REASON] = EXIT_MMIO
    h[EXIT_VADDR] = vaddr
    h[EXIT_PADDR] = paddr
    h[EXIT_SIZE] = size
    h[EXIT_VALUE] = value
    h[EXIT_RD] = rd
    h[EXIT_FLAGS] = flags
    h[EXIT_ILEN] = ilen
    return pc | 1


@jit_inline
def load_value(h, m8, m16, m32, m64, ram_base, vaddr, size, pc):
    """Read ``size`` bytes at ``vaddr`` from RAM.

    Returns (value, paddr, status): status 0 done, 1 not RAM (value unset,
    the caller makes an MMIO exit), 2 a trap was taken (value is its pc).
    """
    if vaddr & 0xFFF > 4096 - size:
        return split_access(h, m8, m16, m32, m64, ram_base, vaddr, size, 0, pc, False)
    paddr, fault = translate(h, m64, ram_base, vaddr, ACCESS_LOAD, size)
    if fault >= 0:
        return take_trap(h, fault, vaddr, pc, False), paddr, 2
    offset = ram_offset(m8, ram_base, paddr, size)
    if offset < 0:
        return 0, paddr, 1
    return ram_read(m8, m16, m32, m64, offset, size), paddr, 0


@jit_inline
def store_value(h, m8, m16, m32, m64, ram_base, vaddr, size, value, pc):
    """Write ``size`` bytes at ``vaddr``: status as in ``load_value`` (first item is the trap pc)."""
    if vaddr & 0xFFF > 4096 - size:
        return split_access(h, m8, m16, m32, m64, ram_base, vaddr, size, value, pc, True)
    paddr, fault = translate(h, m64, ram_base, vaddr, ACCESS_STORE, size)
    if fault >= 0:
        return take_trap(h, fault, vaddr, pc, False), paddr, 2
    offset = ram_offset(m8, ram_base, paddr, size)
    if offset < 0:
        return 0, paddr, 1
    ram_write(m8, m16, m32, m64, offset, size, value)
    return 0, paddr, 0


@jit
def split_access(h, m8, m16, m32, m64, ram_base, vaddr, size, value, pc, write):
    """A misaligned access that crosses a page: each page is translated on its own.

    Both pages are translated before any byte is written, so a fault leaves
    memory untouched. Such an access must lie in RAM; elsewhere it is an
    access fault. Returns as ``load_value``.
    """
    access = ACCESS_STORE if write else ACCESS_LOAD
    next_page = (vaddr | 0xFFF) + 1
    first, fault = translate(h, m64, ram_base, vaddr, access, 4096 - (vaddr & 0xFFF))
    if fault >= 0:
        return take_trap(h, fault, vaddr, pc, False), 0, 2
    second, fault = translate(h, m64, ram_base, next_page, access,
                              size - (4096 - (vaddr & 0xFFF)))
    if fault >= 0:  # mtval: the address of the part that faulted (priv 3.1.16)
        return take_trap(h, fault, next_page, pc, False), 0, 2
    first_bytes = 4096 - (vaddr & 0xFFF)
    for i in range(size):
        paddr = first + i if i < first_bytes else second + i - first_bytes
        if ram_offset(m8, ram_base, paddr, 1) < 0:
            cause = CAUSE_STORE_ACCESS if write else CAUSE_LOAD_ACCESS
            return take_trap(h, cause, vaddr + i, pc, False), 0, 2
    result = 0
    for i in range(size):
        paddr = first + i if i < first_bytes else second + i - first_bytes
        offset = paddr - ram_base
        if write:
            m8[offset] = (((value >> (8 * i)) & 0xFF) ^ 0x80) - 0x80
        else:
            result |= (m8[offset] & 0xFF) << (8 * i)
    shift = 64 - 8 * size
    return (result << shift) >> shift, first, 0


@jit_inline
def load(h, m8, m16, m32, m64, ram_base, insn, pc, ilen):
    """LOAD: lb, lh, lw, ld, lbu, lhu, lwu."""
    funct3 = (insn >> 12) & 7
    if funct3 == 7:
        return illegal(h, insn, pc, ilen)
    rd = (insn >> 7) & 31
    vaddr = h[(insn >> 15) & 31] + (insn >> 20)
    size = 1 << (funct3 & 3)
    value, paddr, status = load_value(h, m8, m16, m32, m64, ram_base, vaddr, size, pc)
    if status == 2:
        return value
    unsigned = funct3 >= 4
    if status == 1:
        return mmio_exit(h, vaddr, paddr, size, 0, rd, MMIO_UNSIGNED if unsigned else 0, pc, ilen)
    if unsigned:
        value &= (1 << (8 * size)) - 1
    h[rd] = value
    return pc + ilen


@jit_inline
def store(h, m8, m16, m32, m64, ram_base, insn, pc, ilen):
    """STORE: sb, sh, sw, sd. A store to the HTIF tohost word leaves the loop."""
    funct3 = (insn >> 12) & 7
    if funct3 >= 4:
        return illegal(h, insn, pc, ilen)
    imm = ((insn >> 25) << 5) | ((insn >> 7) & 31)
    vaddr = h[(insn >> 15) & 31] + imm
    value = h[(insn >> 20) & 31]
    size = 1 << funct3
    trap_pc, paddr, status = store_value(h, m8, m16, m32, m64, ram_base, vaddr, size, value, pc)
    if status == 2:
        return trap_pc
    if status == 1:
        return mmio_exit(h, vaddr, paddr, size, value, 0, MMIO_WRITE, pc, ilen)
    if (paddr & ~7) == h[WATCH_PADDR]:
        h[EXIT_REASON] = EXIT_HTIF
        return (pc + ilen) | 1
    return pc + ilen


@jit
def fp_mmio_exit(h, vaddr, paddr, size, value, rd, write, pc, ilen):
    """MMIO exit of FLW/FLD/FSW/FSD (used by the F and D extensions)."""
    return mmio_exit(h, vaddr, paddr, size, value, rd, MMIO_FP | (MMIO_WRITE if write else 0),
                     pc, ilen)


@jit
def _amo_result(funct5, old, src, word):
    """The value an AMO writes back, given the loaded value and rs2."""
    if word:
        old = sext32(old)
        src = sext32(src)
    if funct5 == 0x01:
        return src                                      # amoswap
    if funct5 == 0x00:
        return old + src                                # amoadd
    if funct5 == 0x04:
        return old ^ src                                # amoxor
    if funct5 == 0x0C:
        return old & src                                # amoand
    if funct5 == 0x08:
        return old | src                                # amoor
    if funct5 == 0x10:
        return old if old < src else src                # amomin
    if funct5 == 0x14:
        return src if old < src else old                # amomax
    if word:
        old &= 0xFFFFFFFF
        src &= 0xFFFFFFFF
    if funct5 == 0x18:
        return old if ltu(old, src) else src            # amominu
    return src if ltu(old, src) else old                # amomaxu


@jit
def amo(h, m8, m16, m32, m64, ram_base, insn, pc, ilen):
    """AMO: lr, sc and the read-modify-write atomics, W and D."""
    funct3 = (insn >> 12) & 7
    funct5 = (insn >> 27) & 31
    if funct3 != 2 and funct3 != 3:
        return illegal(h, insn, pc, ilen)
    if funct5 not in (0x00, 0x01, 0x02, 0x03, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18, 0x1C):
        return illegal(h, insn, pc, ilen)
    if funct5 == 0x02 and (insn >> 20) & 31:
        return illegal(h, insn, pc, ilen)  # lr with rs2 != 0 is reserved
    rd = (insn >> 7) & 31
    vaddr = h[(insn >> 15) & 31]
    src = h[(insn >> 20) & 31]
    size = 4 if funct3 == 2 else 8
    is_load = funct5 == 0x02
    if vaddr & (size - 1):
        cause = CAUSE_LOAD_MISALIGNED if is_load else CAUSE_STORE_MISALIGNED
        return take_trap(h, cause, vaddr, pc, False)
    paddr, fault = translate(h, m64, ram_base, vaddr, ACCESS_LOAD if is_load else ACCESS_STORE,
                             size)
    if fault >= 0:
        return take_trap(h, fault, vaddr, pc, False)
    offset = ram_offset(m8, ram_base, paddr, size)
    if offset < 0:
        cause = CAUSE_LOAD_ACCESS if is_load else CAUSE_STORE_ACCESS
        return take_trap(h, cause, vaddr, pc, False)
    if is_load:                                         # lr
        h[rd] = ram_read(m8, m16, m32, m64, offset, size)
        h[RESERVATION] = paddr
        return pc + ilen
    if funct5 == 0x03:                                  # sc
        if h[RESERVATION] == paddr:
            ram_write(m8, m16, m32, m64, offset, size, src)
            h[rd] = 0
        else:
            h[rd] = 1
        h[RESERVATION] = -1
        return pc + ilen
    old = ram_read(m8, m16, m32, m64, offset, size)
    ram_write(m8, m16, m32, m64, offset, size, _amo_result(funct5, old, src, size == 4))
    h[rd] = old
    if (paddr & ~7) == h[WATCH_PADDR]:
        h[EXIT_REASON] = EXIT_HTIF
        return (pc + ilen) | 1
    return pc + ilen
