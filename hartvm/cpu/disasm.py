"""A disassembler for the instruction trace (``hartvm boot --trace``).

It names RV64IMAFD, Zicsr, Zifencei and the privileged instructions in the
style of GNU objdump with ``-M no-aliases`` (register ABI names, decimal
immediates). Compressed instructions are shown as their 32-bit expansion,
which is what the hart executes. Python only: the trace runs one step at a time.
"""

from .compressed import EXPANSION_TABLE

XNAMES = ["zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1"] + \
    [f"a{i}" for i in range(8)] + [f"s{i}" for i in range(2, 12)] + [f"t{i}" for i in range(3, 7)]
FNAMES = [f"ft{i}" for i in range(8)] + ["fs0", "fs1"] + [f"fa{i}" for i in range(8)] + \
    [f"fs{i}" for i in range(2, 12)] + [f"ft{i}" for i in range(8, 12)]
ROUNDING = ["rne", "rtz", "rdn", "rup", "rmm", "?", "?", "dyn"]

OP = {(0, 0): "add", (0x20, 0): "sub", (0, 1): "sll", (0, 2): "slt", (0, 3): "sltu",
      (0, 4): "xor", (0, 5): "srl", (0x20, 5): "sra", (0, 6): "or", (0, 7): "and",
      (1, 0): "mul", (1, 1): "mulh", (1, 2): "mulhsu", (1, 3): "mulhu", (1, 4): "div",
      (1, 5): "divu", (1, 6): "rem", (1, 7): "remu"}
OP_IMM = {0: "addi", 2: "slti", 3: "sltiu", 4: "xori", 6: "ori", 7: "andi"}
LOADS = {0: "lb", 1: "lh", 2: "lw", 3: "ld", 4: "lbu", 5: "lhu", 6: "lwu"}
STORES = {0: "sb", 1: "sh", 2: "sw", 3: "sd"}
BRANCHES = {0: "beq", 1: "bne", 4: "blt", 5: "bge", 6: "bltu", 7: "bgeu"}
AMOS = {0x00: "amoadd", 0x01: "amoswap", 0x02: "lr", 0x03: "sc", 0x04: "amoxor",
        0x08: "amoor", 0x0C: "amoand", 0x10: "amomin", 0x14: "amomax", 0x18: "amominu",
        0x1C: "amomaxu"}
CSRS = {0x001: "fflags", 0x002: "frm", 0x003: "fcsr", 0xC00: "cycle", 0xC01: "time",
        0xC02: "instret", 0x100: "sstatus", 0x104: "sie", 0x105: "stvec", 0x106: "scounteren",
        0x10A: "senvcfg", 0x140: "sscratch", 0x141: "sepc", 0x142: "scause", 0x143: "stval",
        0x144: "sip", 0x180: "satp", 0xF11: "mvendorid", 0xF12: "marchid", 0xF13: "mimpid",
        0xF14: "mhartid", 0x300: "mstatus", 0x301: "misa", 0x302: "medeleg", 0x303: "mideleg",
        0x304: "mie", 0x305: "mtvec", 0x306: "mcounteren", 0x30A: "menvcfg",
        0x340: "mscratch", 0x341: "mepc", 0x342: "mcause", 0x343: "mtval", 0x344: "mip",
        0xB00: "mcycle", 0xB02: "minstret"}
FP_ARITH = {0x00: "fadd", 0x01: "fsub", 0x02: "fmul", 0x03: "fdiv"}
SYSTEM = {0x00000073: "ecall", 0x00100073: "ebreak", 0x10200073: "sret",
          0x30200073: "mret", 0x10500073: "wfi"}


def _sext(value, bits):
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


def disassemble(word: int, length: int = 4) -> str:
    """Text for an instruction: a 32-bit word, or a 16-bit parcel with length 2."""
    if length == 2:
        expanded = int(EXPANSION_TABLE[word & 0xFFFF]) & 0xFFFFFFFF
        if expanded == 0:
            return f"c.illegal 0x{word & 0xFFFF:04x}"
        return "c: " + _decode(expanded)
    return _decode(word & 0xFFFFFFFF)


def _decode(w: int) -> str:
    op = w & 0x7F
    rd, rs1, rs2 = (w >> 7) & 31, (w >> 15) & 31, (w >> 20) & 31
    f3, f7 = (w >> 12) & 7, w >> 25
    x = XNAMES
    i_imm = _sext(w >> 20, 12)
    if op == 0x37:
        return f"lui {x[rd]},0x{w >> 12:x}"
    if op == 0x17:
        return f"auipc {x[rd]},0x{w >> 12:x}"
    if op == 0x6F:
        imm = _sext(((w >> 31) << 20) | (((w >> 12) & 0xFF) << 12) | (((w >> 20) & 1) << 11)
                    | (((w >> 21) & 0x3FF) << 1), 21)
        return f"jal {x[rd]},{imm:+d}"
    if op == 0x67 and f3 == 0:
        return f"jalr {x[rd]},{i_imm}({x[rs1]})"
    if op == 0x63 and f3 in BRANCHES:
        imm = _sext(((w >> 31) << 12) | (((w >> 7) & 1) << 11) | (((w >> 25) & 0x3F) << 5)
                    | (((w >> 8) & 0xF) << 1), 13)
        return f"{BRANCHES[f3]} {x[rs1]},{x[rs2]},{imm:+d}"
    if op == 0x03 and f3 in LOADS:
        return f"{LOADS[f3]} {x[rd]},{i_imm}({x[rs1]})"
    if op == 0x23 and f3 in STORES:
        imm = _sext(((w >> 25) << 5) | ((w >> 7) & 31), 12)
        return f"{STORES[f3]} {x[rs2]},{imm}({x[rs1]})"
    if op in (0x13, 0x1B):
        suffix = "w" if op == 0x1B else ""
        if f3 == 1:
            return f"slli{suffix} {x[rd]},{x[rs1]},{(w >> 20) & 63}"
        if f3 == 5:
            name = "srai" if w >> 30 & 1 else "srli"
            return f"{name}{suffix} {x[rd]},{x[rs1]},{(w >> 20) & 63}"
        if op == 0x13 and f3 in OP_IMM:
            return f"{OP_IMM[f3]} {x[rd]},{x[rs1]},{i_imm}"
        if op == 0x1B and f3 == 0:
            return f"addiw {x[rd]},{x[rs1]},{i_imm}"
    if op in (0x33, 0x3B) and (f7, f3) in OP:
        suffix = "w" if op == 0x3B else ""
        return f"{OP[(f7, f3)]}{suffix} {x[rd]},{x[rs1]},{x[rs2]}"
    if op == 0x2F and f3 in (2, 3) and (w >> 27) in AMOS:
        name = AMOS[w >> 27] + (".w" if f3 == 2 else ".d")
        if w >> 27 == 0x02:
            return f"{name} {x[rd]},({x[rs1]})"
        return f"{name} {x[rd]},{x[rs2]},({x[rs1]})"
    if op == 0x0F:
        return "fence.i" if f3 == 1 else "fence"
    if op == 0x73:
        if w in SYSTEM:
            return SYSTEM[w]
        if f7 == 0x09 and rd == 0 and f3 == 0:
            return f"sfence.vma {x[rs1]},{x[rs2]}"
        if f3 and f3 != 4:
            csr = w >> 20
            name = CSRS.get(csr, f"0x{csr:x}")
            mnemonic = ["", "csrrw", "csrrs", "csrrc", "", "csrrwi", "csrrsi", "csrrci"][f3]
            source = str(rs1) if f3 >= 5 else x[rs1]
            return f"{mnemonic} {x[rd]},{name},{source}"
    return _decode_fp(w) or f".word 0x{w:08x}"


def _decode_fp(w: int):
    op = w & 0x7F
    rd, rs1, rs2 = (w >> 7) & 31, (w >> 15) & 31, (w >> 20) & 31
    f3, f, x = (w >> 12) & 7, FNAMES, XNAMES
    if op in (0x07, 0x27) and f3 in (2, 3):
        width = "w" if f3 == 2 else "d"
        if op == 0x07:
            return f"fl{width} {f[rd]},{_sext(w >> 20, 12)}({x[rs1]})"
        imm = _sext(((w >> 25) << 5) | ((w >> 7) & 31), 12)
        return f"fs{width} {f[rs2]},{imm}({x[rs1]})"
    fmt = ".s" if (w >> 25) & 3 == 0 else ".d"
    if op in (0x43, 0x47, 0x4B, 0x4F):
        name = {0x43: "fmadd", 0x47: "fmsub", 0x4B: "fnmsub", 0x4F: "fnmadd"}[op]
        return f"{name}{fmt} {f[rd]},{f[rs1]},{f[rs2]},{f[w >> 27]},{ROUNDING[f3]}"
    if op != 0x53:
        return None
    funct5 = w >> 27
    if funct5 in FP_ARITH:
        return f"{FP_ARITH[funct5]}{fmt} {f[rd]},{f[rs1]},{f[rs2]},{ROUNDING[f3]}"
    if funct5 == 0x0B:
        return f"fsqrt{fmt} {f[rd]},{f[rs1]},{ROUNDING[f3]}"
    if funct5 == 0x04:
        return f"{['fsgnj', 'fsgnjn', 'fsgnjx', '?'][f3 & 3]}{fmt} {f[rd]},{f[rs1]},{f[rs2]}"
    if funct5 == 0x05:
        return f"{['fmin', 'fmax'][f3 & 1]}{fmt} {f[rd]},{f[rs1]},{f[rs2]}"
    if funct5 == 0x14:
        return f"{['fle', 'flt', 'feq', '?'][f3 & 3]}{fmt} {x[rd]},{f[rs1]},{f[rs2]}"
    integer = ["w", "wu", "l", "lu"][rs2 & 3]
    if funct5 == 0x18:
        return f"fcvt.{integer}{fmt} {x[rd]},{f[rs1]},{ROUNDING[f3]}"
    if funct5 == 0x1A:
        return f"fcvt{fmt}.{integer} {f[rd]},{x[rs1]},{ROUNDING[f3]}"
    if funct5 == 0x08:
        return f"fcvt{fmt}{'.d' if fmt == '.s' else '.s'} {f[rd]},{f[rs1]},{ROUNDING[f3]}"
    if funct5 == 0x1C:
        return f"{'fclass' if f3 == 1 else 'fmv.x'}{fmt if f3 == 1 else fmt.replace('.s', '.w')} " \
               f"{x[rd]},{f[rs1]}"
    if funct5 == 0x1E:
        return f"fmv{fmt.replace('.s', '.w')}.x {f[rd]},{x[rs1]}"
    return None
