"""SYSTEM: ecall, ebreak, mret, sret, wfi, sfence.vma and the Zicsr instructions.

ISA spec chapter 9 (Zicsr), privileged spec 3.3. Any write to a CSR, and
every trap return, ends the current run-loop block (odd pc) so that the
loop re-evaluates pending interrupts before the next instruction.
"""

from .jit import jit

from .alu import illegal
from .csr import counter_allowed, csr_read, csr_write, stimecmp_allowed
from .layout import (
    CAUSE_BREAKPOINT, CAUSE_ECALL_U, CSR, DEBUG_EBREAK, EXIT_EBREAK, EXIT_REASON, EXIT_WFI,
    MIE, MIP,
    MSTATUS, MSTATUS_TSR, MSTATUS_TVM, MSTATUS_TW, PRIV, PRIV_M, PRIV_S,
    PRIV_U, SATP, FCSR, MSTATUS_FS, STIMECMP,
)
from .mmu import tlb_flush
from .trap import effective_mip, mret, sret, take_trap

ECALL = 0x00000073
EBREAK = 0x00100073
SRET = 0x10200073
MRET = 0x30200073
WFI = 0x10500073


@jit
def _privileged(h, insn, pc, ilen):
    """The funct3=0 SYSTEM instructions."""
    word = insn & 0xFFFFFFFF
    priv = h[PRIV]
    status = h[CSR + MSTATUS]
    if word == ECALL:
        return take_trap(h, CAUSE_ECALL_U + priv, 0, pc, False)
    if word == EBREAK:
        if h[DEBUG_EBREAK]:          # a debugger's breakpoint (vmm/debugger.py)
            h[EXIT_REASON] = EXIT_EBREAK
            return pc | 1
        return take_trap(h, CAUSE_BREAKPOINT, pc, pc, False)
    if word == MRET:
        if priv != PRIV_M:
            return illegal(h, insn, pc, ilen)
        return mret(h)
    if word == SRET:
        if priv == PRIV_U or (priv == PRIV_S and status & MSTATUS_TSR):
            return illegal(h, insn, pc, ilen)
        return sret(h)
    if word == WFI:
        if priv == PRIV_U or (priv == PRIV_S and status & MSTATUS_TW):
            return illegal(h, insn, pc, ilen)
        if effective_mip(h) & h[CSR + MIE]:
            return pc + ilen  # an interrupt is already pending: WFI is a nop
        h[EXIT_REASON] = EXIT_WFI
        return (pc + ilen) | 1
    if (word >> 25) == 0x09 and (word & 0x7FFF) == 0x73:  # sfence.vma
        if priv == PRIV_U or (priv == PRIV_S and status & MSTATUS_TVM):
            return illegal(h, insn, pc, ilen)
        tlb_flush(h)  # the whole TLB: simpler than per-address and ASID flushes
        return (pc + ilen) | 1
    return illegal(h, insn, pc, ilen)


@jit
def system(h, insn, pc, ilen):
    funct3 = (insn >> 12) & 7
    if funct3 == 0:
        return _privileged(h, insn, pc, ilen)
    if funct3 == 4:
        return illegal(h, insn, pc, ilen)
    rd = (insn >> 7) & 31
    rs1 = (insn >> 15) & 31
    number = (insn >> 20) & 0xFFF
    priv = h[PRIV]
    if priv < (number >> 8) & 3:
        return illegal(h, insn, pc, ilen)
    if number == SATP and priv == PRIV_S and h[CSR + MSTATUS] & MSTATUS_TVM:
        return illegal(h, insn, pc, ilen)
    if 0xC00 <= number <= 0xC1F and not counter_allowed(h, number):
        return illegal(h, insn, pc, ilen)
    if number == STIMECMP and not stimecmp_allowed(h):
        return illegal(h, insn, pc, ilen)
    if number <= FCSR and not h[CSR + MSTATUS] & MSTATUS_FS:
        return illegal(h, insn, pc, ilen)  # fflags, frm, fcsr with the FPU off
    operand = rs1 if funct3 >= 5 else h[rs1]  # immediate forms use the rs1 field
    kind = funct3 & 3                          # 1 write, 2 set, 3 clear
    writes = kind == 1 or rs1 != 0
    if writes and (number >> 10) == 3:         # read-only CSR
        return illegal(h, insn, pc, ilen)
    old, ok = csr_read(h, number)
    if not ok:
        return illegal(h, insn, pc, ilen)
    if not writes:
        h[rd] = old
        return pc + ilen
    # Only mip's software-writable SEIP bit takes part in a read-modify-write, not
    # the PLIC's line that a read ORs in (privileged spec 3.1.9); else a csrs on
    # mip while the line is high would latch SEIP on for good.
    base = h[CSR + MIP] if number == MIP else old
    if kind == 1:
        new = operand
    elif kind == 2:
        new = base | operand
    else:
        new = base & ~operand
    csr_write(h, number, new)
    h[rd] = old
    return (pc + ilen) | 1
