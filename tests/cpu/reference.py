"""An independent model of RV64IM arithmetic in plain Python integers.

Tests compare what the hart computes with these definitions, which follow
the ISA spec text (chapters 2, 5 and 13) rather than hartvm's code.
"""

MASK64 = 2**64 - 1


def s64(value):
    value &= MASK64
    return value - 2**64 if value >> 63 else value


def u64(value):
    return value & MASK64


def s32(value):
    value &= 0xFFFFFFFF
    return value - 2**32 if value >> 31 else value


def u32(value):
    return value & 0xFFFFFFFF


def _div(a, b, bits):
    """Signed division rounding toward zero, with the spec's special cases."""
    if b == 0:
        return -1
    if a == -(2 ** (bits - 1)) and b == -1:
        return a
    quotient = abs(a) // abs(b)
    return -quotient if (a < 0) != (b < 0) else quotient


def _rem(a, b, bits):
    if b == 0:
        return a
    if a == -(2 ** (bits - 1)) and b == -1:
        return 0
    return a - _div(a, b, bits) * b


REGISTER_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "sll": lambda a, b: a << (b & 63),
    "srl": lambda a, b: u64(a) >> (b & 63),
    "sra": lambda a, b: s64(a) >> (b & 63),
    "slt": lambda a, b: int(s64(a) < s64(b)),
    "sltu": lambda a, b: int(u64(a) < u64(b)),
    "xor": lambda a, b: a ^ b,
    "or": lambda a, b: a | b,
    "and": lambda a, b: a & b,
    "addw": lambda a, b: s32(a + b),
    "subw": lambda a, b: s32(a - b),
    "sllw": lambda a, b: s32(a << (b & 31)),
    "srlw": lambda a, b: s32(u32(a) >> (b & 31)),
    "sraw": lambda a, b: s32(s32(a) >> (b & 31)),
    "mul": lambda a, b: a * b,
    "mulh": lambda a, b: (s64(a) * s64(b)) >> 64,
    "mulhsu": lambda a, b: (s64(a) * u64(b)) >> 64,
    "mulhu": lambda a, b: (u64(a) * u64(b)) >> 64,
    "div": lambda a, b: _div(s64(a), s64(b), 64),
    "divu": lambda a, b: MASK64 if u64(b) == 0 else u64(a) // u64(b),
    "rem": lambda a, b: _rem(s64(a), s64(b), 64),
    "remu": lambda a, b: u64(a) if u64(b) == 0 else u64(a) % u64(b),
    "mulw": lambda a, b: s32(a * b),
    "divw": lambda a, b: s32(_div(s32(a), s32(b), 32)),
    "divuw": lambda a, b: s32(0xFFFFFFFF if u32(b) == 0 else u32(a) // u32(b)),
    "remw": lambda a, b: s32(_rem(s32(a), s32(b), 32)),
    "remuw": lambda a, b: s32(u32(a) if u32(b) == 0 else u32(a) % u32(b)),
}

IMMEDIATE_OPS = {
    "addi": lambda a, i: a + i,
    "slti": lambda a, i: int(s64(a) < i),
    "sltiu": lambda a, i: int(u64(a) < u64(i)),
    "xori": lambda a, i: a ^ i,
    "ori": lambda a, i: a | i,
    "andi": lambda a, i: a & i,
    "slli": lambda a, i: a << i,
    "srli": lambda a, i: u64(a) >> i,
    "srai": lambda a, i: s64(a) >> i,
    "addiw": lambda a, i: s32(a + i),
    "slliw": lambda a, i: s32(a << i),
    "srliw": lambda a, i: s32(u32(a) >> i),
    "sraiw": lambda a, i: s32(s32(a) >> i),
}

BRANCHES = {
    "beq": lambda a, b: u64(a) == u64(b),
    "bne": lambda a, b: u64(a) != u64(b),
    "blt": lambda a, b: s64(a) < s64(b),
    "bge": lambda a, b: s64(a) >= s64(b),
    "bltu": lambda a, b: u64(a) < u64(b),
    "bgeu": lambda a, b: u64(a) >= u64(b),
}

AMOS = {
    "amoswap": lambda old, src, bits: src,
    "amoadd": lambda old, src, bits: old + src,
    "amoxor": lambda old, src, bits: old ^ src,
    "amoand": lambda old, src, bits: old & src,
    "amoor": lambda old, src, bits: old | src,
    "amomin": lambda old, src, bits: min(_signed(old, bits), _signed(src, bits)),
    "amomax": lambda old, src, bits: max(_signed(old, bits), _signed(src, bits)),
    "amominu": lambda old, src, bits: min(old % 2**bits, src % 2**bits),
    "amomaxu": lambda old, src, bits: max(old % 2**bits, src % 2**bits),
}


def _signed(value, bits):
    value %= 2**bits
    return value - 2**bits if value >> (bits - 1) else value


# Operands that exercise the edges: zero, signs, 32-bit boundaries, shift limits.
EDGE_VALUES = [
    0, 1, 2, 3, 7, 31, 32, 63, 64, -1, -2, -7,
    0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000, -0x80000000,
    2**63 - 1, -(2**63), 0x123456789ABCDEF0, -0x0FEDCBA987654321,
]
