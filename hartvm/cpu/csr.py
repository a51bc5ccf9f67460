"""Control and status registers (privileged spec chapters 2, 3.1, 4.1; Zicntr).

Each CSR is stored at ``h[CSR + number]``. Two tables built here say which
CSRs exist and which of their bits software may write; the handful of CSRs
that are views of others (sstatus, sie, sip) or counters are special-cased
in ``csr_read``/``csr_write``. A CSR that is not in the table raises an
illegal-instruction exception (the caller raises it when ``ok`` is False).

Counters: ``h[CYCLE]`` and ``h[INSTRET]`` count from reset and also drive
``mtime``; a write to ``mcycle``/``minstret`` stores an offset in that CSR's
slot so that the time base is not disturbed.

Sstc (privileged spec chapter "Sstc"): ``stimecmp`` is a plain CSR; while
``menvcfg.STCE`` is set, the run loop drives ``mip.STIP`` from
``time >= stimecmp`` as it drives MTIP from the ACLINT's mtimecmp, and
software cannot write STIP.

PMP (pmp.py) and the Sdtrig triggers (triggers.py, tselect..tinfo at
0x7A0-0x7A4) decide what the MMU's slow path checks: a write to any of
their CSRs recomputes the guest's bits of ``h[CHECKS]`` and flushes the TLB
(QEMU 7.2 flushes on every pmpcfg/pmpaddr write, target/riscv/pmp.c).
"""

import numpy as np
from .jit import jit
from .trap import effective_mip
from .mmu import SATP_MODE_BARE, SATP_MODE_SV39, SATP_MODE_SV48, SATP_MODE_SV57, tlb_flush
from .pmp import pmp_config, pmp_update
from .triggers import TINFO, TSELECT_CSR, trigger_read, trigger_write, triggers_update

from .layout import (
    CSR, CYCLE, CYCLES_PER_TICK, INSTRET, MCAUSE, MCOUNTEREN, MCOUNTINHIBIT,
    MCYCLE, MEDELEG, MENVCFG, MEPC, MHARTID, MIDELEG, MIE, MINSTRET, MIP, MISA,
    MSCRATCH, MSTATUS, MSTATUS_FS, MSTATUS_MIE, MSTATUS_MPIE, MSTATUS_MPP,
    MSTATUS_MPRV, MSTATUS_MXR, MSTATUS_SD, FFLAGS, FRM, FCSR, MSTATUS_SIE, MSTATUS_SPIE, MSTATUS_SPP,
    MSTATUS_SUM, MSTATUS_TSR, MSTATUS_TVM, MSTATUS_TW,
    MSTATUS_UXL, MTVAL, MTVEC, MVENDORID, MARCHID, MIMPID, MCONFIGPTR,
    PMPADDR0, PMPCFG0, SATP, SCAUSE, SCOUNTEREN, SENVCFG, SEPC, SIE, SIP,
    SSCRATCH, SSTATUS, STVAL, STVEC, S_INTERRUPTS, ALL_INTERRUPTS, MIP_SSIP,
    CYCLE_CSR, TIME_CSR, INSTRET_CSR, TIME_OFFSET, PRIV, PRIV_M, PRIV_S,
    STIMECMP, COUNTEREN_TM, MENVCFG_STCE, MIP_STIP,
)

ALL = -1
SSTATUS_MASK = MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP | MSTATUS_FS | MSTATUS_SUM \
    | MSTATUS_MXR | MSTATUS_UXL | MSTATUS_SD
MSTATUS_WRITABLE = MSTATUS_SIE | MSTATUS_MIE | MSTATUS_SPIE | MSTATUS_MPIE | MSTATUS_SPP \
    | MSTATUS_MPP | MSTATUS_MPRV | MSTATUS_SUM | MSTATUS_MXR | MSTATUS_TVM | MSTATUS_TW \
    | MSTATUS_TSR | MSTATUS_FS
# Exceptions that M-mode may hand to S-mode: all but ecall from M (cause 11).
DELEGABLE_EXCEPTIONS = 0b1011_0011_1111_1111
PMPADDR_MASK = (1 << 54) - 1
SATP_WRITABLE = (0xF << 60) | (0xFFFF << 44) | ((1 << 44) - 1)  # MODE, ASID, PPN
# menvcfg: FIOM and STCE. QEMU 7.2's write_menvcfg (target/riscv/csr.c) also
# lets CBIE, CBCFE, CBZE and PBMTE be written; hartvm has no Zicbo* or Svpbmt.
MENVCFG_WRITABLE = 1 | MENVCFG_STCE


def _tables():
    """(exists, writable) arrays over the 4096 CSR numbers."""
    writable = {
        MSTATUS: MSTATUS_WRITABLE, MISA: 0, MEDELEG: DELEGABLE_EXCEPTIONS,
        MIDELEG: S_INTERRUPTS, MIE: ALL_INTERRUPTS, MTVEC: ALL, MCOUNTEREN: 0xFFFFFFFF,
        MENVCFG: MENVCFG_WRITABLE, MCOUNTINHIBIT: 0, MSCRATCH: ALL, MEPC: ALL, MCAUSE: ALL,
        MTVAL: ALL,
        MIP: S_INTERRUPTS, MVENDORID: 0, MARCHID: 0, MIMPID: 0, MHARTID: 0, MCONFIGPTR: 0,
        SSTATUS: 0, SIE: 0, STVEC: ALL, SCOUNTEREN: 0xFFFFFFFF, SENVCFG: 1, SSCRATCH: ALL,
        SEPC: ALL, SCAUSE: ALL, STVAL: ALL, SIP: 0, SATP: ALL, STIMECMP: ALL,
        MCYCLE: ALL, MINSTRET: ALL, CYCLE_CSR: 0, TIME_CSR: 0, INSTRET_CSR: 0,
        PMPCFG0: ALL, PMPCFG0 + 2: ALL, FFLAGS: 0x1F, FRM: 0x7, FCSR: 0xFF,
    }
    for i in range(16):
        writable[PMPADDR0 + i] = PMPADDR_MASK
    for number in range(TSELECT_CSR, TINFO + 1):   # triggers.py handles them
        writable[number] = 0
    for i in range(3, 32):  # hpm counters and events: present, hardwired to zero
        writable[0xB00 + i] = 0
        writable[0xC00 + i] = 0
        writable[0x320 + i] = 0
    exists = np.zeros(4096, np.bool_)
    mask = np.zeros(4096, np.int64)
    for number, bits in writable.items():
        exists[number] = True
        mask[number] = bits
    return exists, mask


CSR_EXISTS, CSR_WRITABLE = _tables()


@jit
def mtime(h):
    """The ACLINT time this hart sees (10 MHz, derived from the cycle count)."""
    return h[CYCLE] // CYCLES_PER_TICK + h[TIME_OFFSET]


@jit
def counter_allowed(h, number):
    """Zicntr: may the current privilege read counter CSR ``number`` (0xC00-0xC1F)?"""
    bit = 1 << (number & 31)
    priv = h[PRIV]
    if priv == PRIV_M:
        return True
    if not h[CSR + MCOUNTEREN] & bit:
        return False
    return priv == PRIV_S or bool(h[CSR + SCOUNTEREN] & bit)


@jit
def stimecmp_allowed(h):
    """Sstc: may the current privilege access stimecmp? M-mode always; S-mode
    only with mcounteren.TM and menvcfg.STCE both set (privileged spec, Sstc),
    as QEMU 7.2's ``sstc`` predicate (target/riscv/csr.c). U-mode never reaches
    here: stimecmp is a supervisor CSR."""
    if h[PRIV] == PRIV_M:
        return True
    return bool(h[CSR + MCOUNTEREN] & COUNTEREN_TM) and h[CSR + MENVCFG] < 0   # STCE: bit 63


@jit
def csr_read(h, number):
    """(value, ok) of CSR ``number``; ok is False when it does not exist."""
    if not CSR_EXISTS[number]:
        return 0, False
    if number == MCYCLE or number == CYCLE_CSR:
        return h[CYCLE] + h[CSR + MCYCLE], True
    if number == MINSTRET or number == INSTRET_CSR:
        return h[INSTRET] + h[CSR + MINSTRET], True
    if number == TIME_CSR:
        return mtime(h), True
    if number == SSTATUS:
        return h[CSR + MSTATUS] & SSTATUS_MASK, True
    if number == SIE:
        return h[CSR + MIE] & h[CSR + MIDELEG], True
    if number == SIP:
        return effective_mip(h) & h[CSR + MIDELEG], True
    if number == MIP:
        return effective_mip(h), True
    if number == FFLAGS:
        return h[CSR + FCSR] & 0x1F, True
    if number == FRM:
        return (h[CSR + FCSR] >> 5) & 7, True
    if TSELECT_CSR <= number <= TINFO:
        return trigger_read(h, number), True
    return h[CSR + number], True


@jit
def csr_write(h, number, value):
    """Write CSR ``number`` (WARL fields keep legal values); False if it does not exist."""
    if not CSR_EXISTS[number]:
        return False
    # The writing instruction itself counts after the write, so that the
    # next instruction reads the value written.
    if number == MCYCLE:
        h[CSR + MCYCLE] = value - h[CYCLE] - 1
    elif number == MINSTRET:
        h[CSR + MINSTRET] = value - h[INSTRET] - 1
    elif number == SSTATUS:
        keep = h[CSR + MSTATUS] & ~SSTATUS_MASK
        set_mstatus(h, keep | (value & SSTATUS_MASK & MSTATUS_WRITABLE))
    elif number == SIE:
        delegated = h[CSR + MIDELEG]
        h[CSR + MIE] = (h[CSR + MIE] & ~delegated) | (value & delegated)
    elif number == SIP:
        writable = h[CSR + MIDELEG] & MIP_SSIP
        h[CSR + MIP] = (h[CSR + MIP] & ~writable) | (value & writable)
    elif number == MIP:
        writable = CSR_WRITABLE[MIP]
        if h[CSR + MENVCFG] & MENVCFG_STCE:
            # Sstc: stimecmp drives STIP, software cannot write it (QEMU 7.2's
            # rmw_mip64 in target/riscv/csr.c drops STIP from the mask likewise).
            writable &= ~MIP_STIP
        h[CSR + MIP] = (h[CSR + MIP] & ~writable) | (value & writable)
    elif number == MSTATUS:
        new = (h[CSR + MSTATUS] & ~MSTATUS_WRITABLE) | (value & MSTATUS_WRITABLE)
        if (new & MSTATUS_MPP) == (2 << 11):  # MPP=2 is reserved: keep the old mode
            new = (new & ~MSTATUS_MPP) | (h[CSR + MSTATUS] & MSTATUS_MPP)
        set_mstatus(h, new)
    elif number == SATP:
        mode = (value >> 60) & 0xF
        # Bare, Sv39, Sv48 and Sv57, as QEMU 7.2 (valid_vm_1_10_64 in
        # target/riscv/csr.c); a write of another mode has no effect (4.1.11).
        if mode == SATP_MODE_BARE:
            h[CSR + SATP] = 0
        elif mode == SATP_MODE_SV39 or mode == SATP_MODE_SV48 or mode == SATP_MODE_SV57:
            h[CSR + SATP] = value & SATP_WRITABLE
        tlb_flush(h)
    elif number == MTVEC or number == STVEC:
        h[CSR + number] = value & ~2  # modes 0 (direct) and 1 (vectored) only
    elif number == MEPC or number == SEPC:
        h[CSR + number] = value & ~1  # IALIGN=16 with the C extension
    elif number == FFLAGS or number == FRM or number == FCSR:
        if number == FFLAGS:
            value = (h[CSR + FCSR] & ~0x1F) | (value & 0x1F)
        elif number == FRM:
            value = (h[CSR + FCSR] & 0x1F) | ((value & 7) << 5)
        h[CSR + FCSR] = value & 0xFF
        h[CSR + MSTATUS] |= MSTATUS_FS | MSTATUS_SD
    elif number == PMPCFG0 or number == PMPCFG0 + 2:
        h[CSR + number] = pmpcfg_legal(h[CSR + number], value)
        guest_checks(h)
    elif PMPADDR0 <= number < PMPADDR0 + 16:
        entry = number - PMPADDR0
        # A locked entry's address is fixed, and so is the one below a locked
        # TOR entry, which uses it as its base (privileged spec 3.7.1).
        locked = pmp_config(h, entry) & 0x80
        if entry < 15:
            above = pmp_config(h, entry + 1)
            locked |= above & 0x80 and (above >> 3) & 3 == 1
        if not locked:
            h[CSR + number] = value & PMPADDR_MASK
            guest_checks(h)
    elif TSELECT_CSR <= number <= TINFO:
        trigger_write(h, number, value)
        guest_checks(h)
    else:
        mask = CSR_WRITABLE[number]
        h[CSR + number] = (h[CSR + number] & ~mask) | (value & mask)
    return True


@jit
def set_mstatus(h, value):
    """Store mstatus, with SD summarising FS (SUM and MXR are part of TLB tags)."""
    value &= ~MSTATUS_SD
    if value & MSTATUS_FS == MSTATUS_FS:
        value |= MSTATUS_SD  # SD summarises a Dirty FS (3.1.6.6)
    h[CSR + MSTATUS] = value


@jit
def guest_checks(h):
    """Recompute the guest's bits of h[CHECKS] (PMP, triggers) and flush the TLB,
    which may hold pages that are checked now."""
    pmp_update(h)
    triggers_update(h)
    tlb_flush(h)


@jit
def pmpcfg_legal(old, value):
    """A pmpcfg write: locked entries keep their byte; R=0,W=1 is reserved (priv 3.7.1)."""
    result = 0
    for i in range(8):
        old_byte = (old >> (8 * i)) & 0xFF
        byte = (value >> (8 * i)) & 0x9F  # bits 5-6 are reserved
        if old_byte & 0x80:
            byte = old_byte
        elif byte & 3 == 2:
            byte &= ~3
        result |= byte << (8 * i)
    return result
