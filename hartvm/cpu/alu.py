"""Integer computation: OP, OP-IMM, OP-32, OP-IMM-32, LUI, AUIPC and the M extension.

Registers are int64; unsigned operations convert explicitly. Numba promotes
a mix of int64 and uint64 to float64, so unsigned values are only ever
combined with other uint64 values (the ``U*`` constants below).
ISA spec chapters 2.4 (RV32I computational), 5.2 (RV64I), 13 (M extension).
"""

import numpy as np
from .jit import jit, jit_inline

from .layout import CAUSE_ILLEGAL, PARCEL
from .trap import take_trap

INT64_MIN = np.int64(-9223372036854775808)
U32 = np.uint64(32)
UMASK32 = np.uint64(0xFFFFFFFF)


@jit_inline
def sext32(value):
    """Sign-extend the low 32 bits of ``value``."""
    return ((value & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000


@jit_inline
def ltu(a, b):
    """Unsigned a < b for int64 operands."""
    return (a ^ INT64_MIN) < (b ^ INT64_MIN)


@jit_inline
def srl(a, shamt):
    """Logical right shift of a 64-bit value."""
    return np.int64(np.uint64(a) >> np.uint64(shamt))


@jit_inline
def mulhu(a, b):
    """High 64 bits of the unsigned 128-bit product (schoolbook on 32-bit halves)."""
    ua = np.uint64(a)
    ub = np.uint64(b)
    a_lo = ua & UMASK32
    a_hi = ua >> U32
    b_lo = ub & UMASK32
    b_hi = ub >> U32
    low = a_lo * b_lo
    mid1 = a_hi * b_lo + (low >> U32)
    mid2 = a_lo * b_hi + (mid1 & UMASK32)
    return np.int64(a_hi * b_hi + (mid1 >> U32) + (mid2 >> U32))


@jit
def mulh(a, b):
    high = mulhu(a, b)
    if a < 0:
        high -= b
    if b < 0:
        high -= a
    return high


@jit
def mulhsu(a, b):
    high = mulhu(a, b)
    if a < 0:
        high -= b
    return high


@jit
def div(a, b):
    """Signed division rounding toward zero; x/0 = -1, MIN/-1 = MIN (ISA 13.2)."""
    if b == 0:
        return np.int64(-1)
    if a == INT64_MIN and b == -1:
        return a
    q = a // b  # numba floors like Python; correct to truncation
    if q < 0 and q * b != a:
        q += 1
    return q


@jit
def rem(a, b):
    if b == 0:
        return a
    if a == INT64_MIN and b == -1:
        return np.int64(0)
    return a - div(a, b) * b


@jit
def divu(a, b):
    if b == 0:
        return np.int64(-1)
    return np.int64(np.uint64(a) // np.uint64(b))


@jit
def remu(a, b):
    if b == 0:
        return a
    return np.int64(np.uint64(a) % np.uint64(b))


@jit
def illegal(h, insn, pc, ilen):
    """Raise illegal instruction; mtval holds the instruction as fetched."""
    bits = h[PARCEL] if ilen == 2 else insn & 0xFFFFFFFF
    return take_trap(h, CAUSE_ILLEGAL, bits, pc, False)


@jit_inline
def op_imm(h, insn, pc, ilen):
    """OP-IMM: addi, slti, sltiu, xori, ori, andi, slli, srli, srai."""
    rd = (insn >> 7) & 31
    a = h[(insn >> 15) & 31]
    imm = insn >> 20
    funct3 = (insn >> 12) & 7
    if funct3 == 0:
        h[rd] = a + imm
    elif funct3 == 1:
        if (insn >> 26) & 0x3F:
            return illegal(h, insn, pc, ilen)
        h[rd] = a << (imm & 63)
    elif funct3 == 2:
        h[rd] = 1 if a < imm else 0
    elif funct3 == 3:
        h[rd] = 1 if ltu(a, imm) else 0
    elif funct3 == 4:
        h[rd] = a ^ imm
    elif funct3 == 5:
        kind = (insn >> 26) & 0x3F
        if kind == 0:
            h[rd] = srl(a, imm & 63)
        elif kind == 0x10:
            h[rd] = a >> (imm & 63)
        else:
            return illegal(h, insn, pc, ilen)
    elif funct3 == 6:
        h[rd] = a | imm
    else:
        h[rd] = a & imm
    return pc + ilen


@jit_inline
def op_imm32(h, insn, pc, ilen):
    """OP-IMM-32: addiw, slliw, srliw, sraiw."""
    rd = (insn >> 7) & 31
    a = h[(insn >> 15) & 31]
    funct3 = (insn >> 12) & 7
    funct7 = (insn >> 25) & 0x7F
    shamt = (insn >> 20) & 31
    if funct3 == 0:
        h[rd] = sext32(a + (insn >> 20))
    elif funct3 == 1 and funct7 == 0:
        h[rd] = sext32(a << shamt)
    elif funct3 == 5 and funct7 == 0:
        h[rd] = sext32((a & 0xFFFFFFFF) >> shamt)
    elif funct3 == 5 and funct7 == 0x20:
        h[rd] = sext32(a) >> shamt
    else:
        return illegal(h, insn, pc, ilen)
    return pc + ilen


@jit_inline
def _muldiv(funct3, a, b):
    if funct3 == 0:
        return a * b
    if funct3 == 1:
        return mulh(a, b)
    if funct3 == 2:
        return mulhsu(a, b)
    if funct3 == 3:
        return mulhu(a, b)
    if funct3 == 4:
        return div(a, b)
    if funct3 == 5:
        return divu(a, b)
    if funct3 == 6:
        return rem(a, b)
    return remu(a, b)


@jit_inline
def op(h, insn, pc, ilen):
    """OP: register-register integer instructions and RV64M."""
    rd = (insn >> 7) & 31
    a = h[(insn >> 15) & 31]
    b = h[(insn >> 20) & 31]
    funct3 = (insn >> 12) & 7
    funct7 = (insn >> 25) & 0x7F
    if funct7 == 0:
        if funct3 == 0:
            h[rd] = a + b
        elif funct3 == 1:
            h[rd] = a << (b & 63)
        elif funct3 == 2:
            h[rd] = 1 if a < b else 0
        elif funct3 == 3:
            h[rd] = 1 if ltu(a, b) else 0
        elif funct3 == 4:
            h[rd] = a ^ b
        elif funct3 == 5:
            h[rd] = srl(a, b & 63)
        elif funct3 == 6:
            h[rd] = a | b
        else:
            h[rd] = a & b
    elif funct7 == 0x20 and funct3 == 0:
        h[rd] = a - b
    elif funct7 == 0x20 and funct3 == 5:
        h[rd] = a >> (b & 63)
    elif funct7 == 1:
        h[rd] = _muldiv(funct3, a, b)
    else:
        return illegal(h, insn, pc, ilen)
    return pc + ilen


@jit
def _muldiv32(funct3, a, b):
    if funct3 == 0:
        return sext32(a * b)
    if funct3 == 4:  # divw: operands are the sign-extended low words
        return sext32(div(sext32(a), sext32(b)))
    if funct3 == 5:
        return sext32(divu(a & 0xFFFFFFFF, b & 0xFFFFFFFF))
    if funct3 == 6:
        return sext32(rem(sext32(a), sext32(b)))
    return sext32(remu(a & 0xFFFFFFFF, b & 0xFFFFFFFF))


@jit_inline
def op32(h, insn, pc, ilen):
    """OP-32: addw, subw, sllw, srlw, sraw and the RV64M word forms."""
    rd = (insn >> 7) & 31
    a = h[(insn >> 15) & 31]
    b = h[(insn >> 20) & 31]
    funct3 = (insn >> 12) & 7
    funct7 = (insn >> 25) & 0x7F
    if funct7 == 0 and funct3 == 0:
        h[rd] = sext32(a + b)
    elif funct7 == 0x20 and funct3 == 0:
        h[rd] = sext32(a - b)
    elif funct7 == 0 and funct3 == 1:
        h[rd] = sext32(a << (b & 31))
    elif funct7 == 0 and funct3 == 5:
        h[rd] = sext32((a & 0xFFFFFFFF) >> (b & 31))
    elif funct7 == 0x20 and funct3 == 5:
        h[rd] = sext32(a) >> (b & 31)
    elif funct7 == 1 and (funct3 == 0 or funct3 >= 4):
        h[rd] = _muldiv32(funct3, a, b)
    else:
        return illegal(h, insn, pc, ilen)
    return pc + ilen
