"""The C extension: every 16-bit instruction expanded to its 32-bit equivalent.

A compressed instruction is a short encoding of a base instruction (ISA spec,
chapter "C" Standard Extension, section 16.8 tables). Instead of executing
the 16-bit forms separately, the hart looks them up in a 65536-entry table
built once by ``expand`` and runs the 32-bit instruction with a length of 2,
so link addresses (c.jal, c.jalr) and the next pc come out right. Reserved
and illegal encodings expand to 0, which the hart raises as an illegal
instruction with the original 16 bits in ``mtval``.

The expansion is plain Python: it runs once per parcel to build the table,
which is then kept beside the compiled code (same cache directory, so it is
rebuilt whenever this file changes). Compiling it with numba cost more time
at a cold start than running it.
"""

import os

import numba
import numpy as np


def _bit(value, pos):
    return (value >> pos) & 1


def _i_type(imm, rs1, funct3, rd, opcode):
    return ((imm & 0xFFF) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _s_type(imm, rs2, rs1, funct3, opcode):
    return (((imm >> 5) & 0x7F) << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) \
        | ((imm & 0x1F) << 7) | opcode


def _r_type(funct7, rs2, rs1, funct3, rd, opcode):
    return (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _b_type(imm, rs2, rs1, funct3):
    return (_bit(imm, 12) << 31) | (((imm >> 5) & 0x3F) << 25) | (rs2 << 20) | (rs1 << 15) \
        | (funct3 << 12) | (((imm >> 1) & 0xF) << 8) | (_bit(imm, 11) << 7) | 0x63


def _j_type(imm, rd):
    return (_bit(imm, 20) << 31) | (((imm >> 1) & 0x3FF) << 21) | (_bit(imm, 11) << 20) \
        | (((imm >> 12) & 0xFF) << 12) | (rd << 7) | 0x6F


def _sext(value, bits):
    sign = 1 << (bits - 1)
    return (value ^ sign) - sign


def _quadrant0(c):
    funct3 = c >> 13
    rd_ = 8 + ((c >> 2) & 7)      # rd' / rs2'
    rs1_ = 8 + ((c >> 7) & 7)
    # offsets scaled by 8 (ld/fld/sd/fsd) and by 4 (lw/sw)
    off8 = (((c >> 10) & 7) << 3) | (((c >> 5) & 3) << 6)
    off4 = (((c >> 10) & 7) << 3) | (_bit(c, 6) << 2) | (_bit(c, 5) << 6)
    if funct3 == 0:  # c.addi4spn
        imm = (((c >> 11) & 3) << 4) | (((c >> 7) & 0xF) << 6) | (_bit(c, 6) << 2) | (_bit(c, 5) << 3)
        if imm == 0:
            return 0
        return _i_type(imm, 2, 0, rd_, 0x13)
    if funct3 == 1:
        return _i_type(off8, rs1_, 3, rd_, 0x07)   # c.fld
    if funct3 == 2:
        return _i_type(off4, rs1_, 2, rd_, 0x03)   # c.lw
    if funct3 == 3:
        return _i_type(off8, rs1_, 3, rd_, 0x03)   # c.ld
    if funct3 == 5:
        return _s_type(off8, rd_, rs1_, 3, 0x27)   # c.fsd
    if funct3 == 6:
        return _s_type(off4, rd_, rs1_, 2, 0x23)   # c.sw
    if funct3 == 7:
        return _s_type(off8, rd_, rs1_, 3, 0x23)   # c.sd
    return 0


def _quadrant1(c):
    funct3 = c >> 13
    rd = (c >> 7) & 31
    imm6 = _sext((_bit(c, 12) << 5) | ((c >> 2) & 31), 6)
    if funct3 == 0:  # c.addi (c.nop)
        return _i_type(imm6, rd, 0, rd, 0x13)
    if funct3 == 1:  # c.addiw
        if rd == 0:
            return 0
        return _i_type(imm6, rd, 0, rd, 0x1B)
    if funct3 == 2:  # c.li
        return _i_type(imm6, 0, 0, rd, 0x13)
    if funct3 == 3:
        if rd == 2:  # c.addi16sp
            imm = (_bit(c, 12) << 9) | (_bit(c, 6) << 4) | (_bit(c, 5) << 6) \
                | (((c >> 3) & 3) << 7) | (_bit(c, 2) << 5)
            if imm == 0:
                return 0
            return _i_type(_sext(imm, 10), 2, 0, 2, 0x13)
        if imm6 == 0:  # c.lui with a zero immediate is reserved
            return 0
        return ((imm6 & 0xFFFFF) << 12) | (rd << 7) | 0x37
    if funct3 == 4:
        rd_ = 8 + ((c >> 7) & 7)
        rs2_ = 8 + ((c >> 2) & 7)
        funct2 = (c >> 10) & 3
        shamt = (_bit(c, 12) << 5) | ((c >> 2) & 31)
        if funct2 == 0:
            return _i_type(shamt, rd_, 5, rd_, 0x13)            # c.srli
        if funct2 == 1:
            return _i_type(0x400 | shamt, rd_, 5, rd_, 0x13)    # c.srai
        if funct2 == 2:
            return _i_type(imm6, rd_, 7, rd_, 0x13)             # c.andi
        op = (c >> 5) & 3
        if _bit(c, 12) == 0:
            if op == 0:
                return _r_type(0x20, rs2_, rd_, 0, rd_, 0x33)   # c.sub
            if op == 1:
                return _r_type(0, rs2_, rd_, 4, rd_, 0x33)      # c.xor
            if op == 2:
                return _r_type(0, rs2_, rd_, 6, rd_, 0x33)      # c.or
            return _r_type(0, rs2_, rd_, 7, rd_, 0x33)          # c.and
        if op == 0:
            return _r_type(0x20, rs2_, rd_, 0, rd_, 0x3B)       # c.subw
        if op == 1:
            return _r_type(0, rs2_, rd_, 0, rd_, 0x3B)          # c.addw
        return 0
    if funct3 == 5:  # c.j
        imm = (_bit(c, 12) << 11) | (_bit(c, 11) << 4) | (((c >> 9) & 3) << 8) \
            | (_bit(c, 8) << 10) | (_bit(c, 7) << 6) | (_bit(c, 6) << 7) \
            | (((c >> 3) & 7) << 1) | (_bit(c, 2) << 5)
        return _j_type(_sext(imm, 12), 0)
    # c.beqz / c.bnez
    rs1_ = 8 + ((c >> 7) & 7)
    imm = (_bit(c, 12) << 8) | (((c >> 10) & 3) << 3) | (((c >> 5) & 3) << 6) \
        | (((c >> 3) & 3) << 1) | (_bit(c, 2) << 5)
    return _b_type(_sext(imm, 9), 0, rs1_, funct3 - 6)


def _quadrant2(c):
    funct3 = c >> 13
    rd = (c >> 7) & 31
    rs2 = (c >> 2) & 31
    if funct3 == 0:  # c.slli
        shamt = (_bit(c, 12) << 5) | rs2
        return _i_type(shamt, rd, 1, rd, 0x13)
    # stack-pointer relative loads: offsets scaled by 8 and 4
    ldsp = (_bit(c, 12) << 5) | (((c >> 5) & 3) << 3) | (((c >> 2) & 7) << 6)
    lwsp = (_bit(c, 12) << 5) | (((c >> 4) & 7) << 2) | (((c >> 2) & 3) << 6)
    sdsp = (((c >> 10) & 7) << 3) | (((c >> 7) & 7) << 6)
    swsp = (((c >> 9) & 0xF) << 2) | (((c >> 7) & 3) << 6)
    if funct3 == 1:
        return _i_type(ldsp, 2, 3, rd, 0x07)          # c.fldsp
    if funct3 == 2:
        if rd == 0:
            return 0
        return _i_type(lwsp, 2, 2, rd, 0x03)          # c.lwsp
    if funct3 == 3:
        if rd == 0:
            return 0
        return _i_type(ldsp, 2, 3, rd, 0x03)          # c.ldsp
    if funct3 == 4:
        if _bit(c, 12) == 0:
            if rs2 == 0:
                if rd == 0:
                    return 0
                return _i_type(0, rd, 0, 0, 0x67)     # c.jr
            return _r_type(0, rs2, 0, 0, rd, 0x33)    # c.mv
        if rs2 == 0:
            if rd == 0:
                return 0x00100073                     # c.ebreak
            return _i_type(0, rd, 0, 1, 0x67)         # c.jalr
        return _r_type(0, rs2, rd, 0, rd, 0x33)       # c.add
    if funct3 == 5:
        return _s_type(sdsp, rs2, 2, 3, 0x27)         # c.fsdsp
    if funct3 == 6:
        return _s_type(swsp, rs2, 2, 2, 0x23)         # c.swsp
    return _s_type(sdsp, rs2, 2, 3, 0x23)             # c.sdsp


def expand(c):
    """The 32-bit instruction that the 16-bit parcel ``c`` stands for, or 0."""
    if c == 0:  # the all-zero parcel is defined illegal
        return 0
    quadrant = c & 3
    if quadrant == 0:
        return _quadrant0(c)
    if quadrant == 1:
        return _quadrant1(c)
    if quadrant == 2:
        return _quadrant2(c)
    return 0


def build_table():
    """int32 table: parcel -> sign-extended 32-bit expansion (0 if illegal)."""
    table = np.zeros(65536, np.int32)
    for c in range(65536):
        word = expand(c) & 0xFFFFFFFF
        table[c] = (word ^ 0x80000000) - 0x80000000
    return table


def _load_table():
    path = os.path.join(numba.config.CACHE_DIR, "compressed-expansion.npy")
    try:
        table = np.load(path)
        if table.shape == (65536,) and table.dtype == np.int32:
            return table
    except (OSError, ValueError):
        pass
    table = build_table()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path + ".tmp.npy", table)
        os.replace(path + ".tmp.npy", path)
    except OSError:
        pass  # a read-only cache: build it again next time
    return table


EXPANSION_TABLE = _load_table()
