"""The F and D extensions: FP loads and stores, OP-FP and the fused multiply-adds.

ISA spec chapters 11 (F) and 12 (D). Registers hold raw 64-bit patterns;
a single is NaN-boxed (upper 32 bits all ones) and an improperly boxed
single reads as the canonical NaN (11.2). The arithmetic is in
``softfloat``, but for what ``hostfloat`` does exactly on the host's FPU
(round to nearest even, normal numbers). With ``mstatus.FS`` Off every FP
instruction is illegal; any write of an FP register or of the flags makes
FS Dirty (privileged spec 3.1.6.6).
"""

from .alu import illegal, sext32
from .jit import jit
from .layout import CSR, FCSR, FREG, MSTATUS, MSTATUS_FS, MSTATUS_SD
from .loadstore import fp_mmio_exit, load_value, store_value
from . import hostfloat as hf
from . import softfloat as sf

BOX = -(1 << 32)                    # upper 32 bits of a NaN-boxed single
CANONICAL_NAN32 = 0x7FC00000


@jit
def fp_enabled(h):
    return h[CSR + MSTATUS] & MSTATUS_FS != 0


@jit
def set_dirty(h):
    h[CSR + MSTATUS] |= MSTATUS_FS | MSTATUS_SD


@jit
def read_operand(h, register, double):
    value = h[FREG + register]
    if double:
        return value
    if value >> 32 != -1:
        return CANONICAL_NAN32      # not NaN-boxed
    return value & 0xFFFFFFFF


@jit
def write_result(h, register, bits, double):
    h[FREG + register] = bits if double else (bits & 0xFFFFFFFF) | BOX
    set_dirty(h)


@jit
def raise_flags(h, flags):
    if flags:
        h[CSR + FCSR] |= flags
        set_dirty(h)


@jit
def rounding_mode(h, insn):
    """The instruction's rounding mode (frm for DYN), or -1 when reserved."""
    rm = (insn >> 12) & 7
    if rm == 7:
        rm = (h[CSR + FCSR] >> 5) & 7
    return rm if rm <= sf.RMM else -1


@jit
def load_fp(h, m8, m16, m32, m64, ram_base, insn, pc, ilen):
    """flw, fld."""
    funct3 = (insn >> 12) & 7
    if not fp_enabled(h) or (funct3 != 2 and funct3 != 3):
        return illegal(h, insn, pc, ilen)
    double = funct3 == 3
    rd = (insn >> 7) & 31
    size = 8 if double else 4
    vaddr = h[(insn >> 15) & 31] + (insn >> 20)
    value, paddr, status = load_value(h, m8, m16, m32, m64, ram_base, vaddr, size, pc)
    if status == 2:
        return value
    if status == 1:
        return fp_mmio_exit(h, vaddr, paddr, size, 0, rd, False, pc, ilen)
    write_result(h, rd, value, double)
    return pc + ilen


@jit
def store_fp(h, m8, m16, m32, m64, ram_base, insn, pc, ilen):
    """fsw, fsd: the register's low 32 or all 64 bits, boxed or not."""
    funct3 = (insn >> 12) & 7
    if not fp_enabled(h) or (funct3 != 2 and funct3 != 3):
        return illegal(h, insn, pc, ilen)
    size = 8 if funct3 == 3 else 4
    vaddr = h[(insn >> 15) & 31] + (((insn >> 25) << 5) | ((insn >> 7) & 31))
    value = h[FREG + ((insn >> 20) & 31)]
    trap_pc, paddr, status = store_value(h, m8, m16, m32, m64, ram_base, vaddr, size, value, pc)
    if status == 2:
        return trap_pc
    if status == 1:
        return fp_mmio_exit(h, vaddr, paddr, size, value, 0, True, pc, ilen)
    return pc + ilen


@jit
def fused(h, insn, pc, ilen):
    """fmadd, fmsub, fnmsub, fnmadd (opcodes 0x43, 0x47, 0x4B, 0x4F)."""
    fmt = (insn >> 25) & 3
    rm = rounding_mode(h, insn)
    if not fp_enabled(h) or fmt > 1 or rm < 0:
        return illegal(h, insn, pc, ilen)
    double = fmt == 1
    E, M = (sf.F64_E, sf.F64_M) if double else (sf.F32_E, sf.F32_M)
    a = read_operand(h, (insn >> 15) & 31, double)
    b = read_operand(h, (insn >> 20) & 31, double)
    c = read_operand(h, (insn >> 27) & 31, double)
    kind = (insn >> 2) & 3          # 0 fmadd, 1 fmsub, 2 fnmsub, 3 fnmadd
    negate_product = kind >= 2
    negate_addend = kind == 1 or kind == 3
    bits, flags, done = hf.fused(a, b, c, rm, double, negate_product, negate_addend)
    if not done:
        bits, flags = sf.fma(a, b, c, rm, E, M, negate_product, negate_addend)
    write_result(h, (insn >> 7) & 31, bits, double)
    raise_flags(h, flags)
    return pc + ilen


@jit
def _arithmetic(funct5, a, b, rm, E, M):
    if funct5 == 0x00:
        return sf.add(a, b, rm, E, M, False)
    if funct5 == 0x01:
        return sf.add(a, b, rm, E, M, True)
    if funct5 == 0x02:
        return sf.mul(a, b, rm, E, M)
    if funct5 == 0x03:
        return sf.div(a, b, rm, E, M)
    return sf.sqrt(a, rm, E, M)


@jit
def _sign_inject(funct3, a, b, E, M):
    sign_bit = 1 << (E + M)
    if funct3 == 0:
        sign = b & sign_bit
    elif funct3 == 1:
        sign = ~b & sign_bit
    else:
        sign = (a ^ b) & sign_bit
    return (a & ~sign_bit) | sign


@jit
def op_fp(h, insn, pc, ilen):
    """OP-FP (opcode 0x53): arithmetic, sign injection, min/max, compares, conversions, moves."""
    if not fp_enabled(h):
        return illegal(h, insn, pc, ilen)
    funct5 = (insn >> 27) & 31
    fmt = (insn >> 25) & 3
    funct3 = (insn >> 12) & 7
    rd = (insn >> 7) & 31
    rs1 = (insn >> 15) & 31
    rs2 = (insn >> 20) & 31
    if fmt > 1:
        return illegal(h, insn, pc, ilen)
    double = fmt == 1
    E, M = (sf.F64_E, sf.F64_M) if double else (sf.F32_E, sf.F32_M)
    a = read_operand(h, rs1, double)
    b = read_operand(h, rs2, double)
    if funct5 <= 0x03 or funct5 == 0x0B:       # add, sub, mul, div, sqrt
        rm = rounding_mode(h, insn)
        if rm < 0 or (funct5 == 0x0B and rs2 != 0):
            return illegal(h, insn, pc, ilen)
        operation = funct5 if funct5 != 0x0B else 4
        bits, flags, done = hf.arithmetic(operation, a, b, rm, double)
        if not done:
            bits, flags = _arithmetic(operation, a, b, rm, E, M)
        write_result(h, rd, bits, double)
        raise_flags(h, flags)
    elif funct5 == 0x04 and funct3 <= 2:       # fsgnj, fsgnjn, fsgnjx
        write_result(h, rd, _sign_inject(funct3, a, b, E, M), double)
    elif funct5 == 0x05 and funct3 <= 1:       # fmin, fmax
        bits, flags = sf.min_max(a, b, E, M, funct3 == 1)
        write_result(h, rd, bits, double)
        raise_flags(h, flags)
    elif funct5 == 0x14 and funct3 <= 2:       # fle, flt, feq
        result, flags = sf.compare(a, b, E, M, funct3)
        h[rd] = result
        raise_flags(h, flags)
    elif funct5 == 0x08 and rs2 == (0 if double else 1):   # fcvt.s.d, fcvt.d.s
        rm = rounding_mode(h, insn)
        if rm < 0:
            return illegal(h, insn, pc, ilen)
        source = read_operand(h, rs1, not double)
        if double:
            bits, flags = sf.convert(source, rm, sf.F32_E, sf.F32_M, E, M)
        else:
            bits, flags = sf.convert(source, rm, sf.F64_E, sf.F64_M, E, M)
        write_result(h, rd, bits, double)
        raise_flags(h, flags)
    elif funct5 == 0x18 and rs2 <= 3:          # fcvt.{w,wu,l,lu}.fmt
        rm = rounding_mode(h, insn)
        if rm < 0:
            return illegal(h, insn, pc, ilen)
        value, flags = sf.to_int(a, rm, E, M, 64 if rs2 >= 2 else 32, rs2 & 1 == 0)
        h[rd] = value
        raise_flags(h, flags)
    elif funct5 == 0x1A and rs2 <= 3:          # fcvt.fmt.{w,wu,l,lu}
        rm = rounding_mode(h, insn)
        if rm < 0:
            return illegal(h, insn, pc, ilen)
        value = h[rs1]
        if rs2 == 0:
            value = sext32(value)
        elif rs2 == 1:
            value &= 0xFFFFFFFF
        bits, flags = sf.from_int(value, rm, E, M, rs2 & 1 == 0)
        write_result(h, rd, bits, double)
        raise_flags(h, flags)
    elif funct5 == 0x1C and rs2 == 0 and funct3 == 0:   # fmv.x.w, fmv.x.d
        raw = h[FREG + rs1]
        h[rd] = raw if double else sext32(raw)
    elif funct5 == 0x1C and rs2 == 0 and funct3 == 1:   # fclass
        h[rd] = sf.classify(a, E, M)
    elif funct5 == 0x1E and rs2 == 0 and funct3 == 0:   # fmv.w.x, fmv.d.x
        write_result(h, rd, h[rs1], double)
    else:
        return illegal(h, insn, pc, ilen)
    return pc + ilen
