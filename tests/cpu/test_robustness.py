"""Random instruction words never crash the host, and each does what its encoding says.

100,000 random 32-bit words and 100,000 random 16-bit parcels run one at a
time as the only instruction, in M-mode, with registers that point at
random places, at the edges of RAM and at devices. For each word the test
first decides from the encoding alone what must happen, with the opcode map
of the ISA spec (RV64IMAFD, Zicsr, Zifencei and the privileged
instructions; ``classify`` below, not hartvm's decoder), and then checks the
hart did exactly that:

* a reserved or unimplemented encoding traps as an illegal instruction,
  with the instruction bits in mtval;
* ecall traps with cause 11 (from M-mode) and mtval 0, ebreak with cause 3;
* a load, store or AMO either completes or traps with the load (LR) or
  store/AMO cause that fits its address: address-misaligned only if the
  address is misaligned, an access fault only if the access leaves RAM,
  with the address in mtval. An aligned access inside RAM completes, an
  access that no device claims faults, and an AMO outside RAM or misaligned
  faults (atomics work only on RAM);
* a jump or taken branch goes to its target and links pc + length;
* every other instruction retires and the next pc is pc + length.

Every trap enters the handler at mtvec with mepc at the word, in M-mode,
with MPP = M and MIE, MPIE clear, and retires nothing; an instruction that
retires leaves mcause and mepc alone (unless it is a CSR write). Every run
is exactly one step and leaves x0 zero. A 16-bit parcel is classified by
its 32-bit expansion (EXPANSION_TABLE, which test_compressed checks against
objdump for every parcel); a parcel without one is illegal.
"""

import random
from collections import Counter

import numpy as np

from hartvm import HostIO, Machine
from hartvm.cpu import layout as L
from hartvm.cpu.compressed import EXPANSION_TABLE
from hartvm.cpu.csr import CSR_EXISTS

MTVEC = 0x8000_1000
SENTINEL = 0xDEAD
MASK64 = 2**64 - 1
FS_INITIAL = 1 << 13
RAM_SIZE = 1 << 20

# --- what the encoding says --------------------------------------------------------

VALID_RM = {0, 1, 2, 3, 4, 7}        # 5 and 6 are reserved; dyn (7) is valid while frm = RNE
LOAD_SIZES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 1, 5: 2, 6: 4}    # lb lh lw ld lbu lhu lwu
AMO_FUNCT5 = {0x00, 0x01, 0x02, 0x03, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18, 0x1C}
LR = 0x02
ECALL, EBREAK = 0x00000073, 0x00100073
SRET, MRET, WFI = 0x10200073, 0x30200073, 0x10500073
CSR_MEPC, CSR_MCAUSE = 0x341, 0x342


def sext(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _op_fp_legal(word):
    """OP-FP (opcode 0x53), formats S and D only (F and D, unprivileged spec 11-12)."""
    funct7, funct3, rs2 = word >> 25, (word >> 12) & 7, (word >> 20) & 31
    fmt, funct5 = funct7 & 3, funct7 >> 2
    if fmt > 1:                                    # H and Q are not implemented
        return False
    rm = funct3 in VALID_RM
    return {
        0x00: rm, 0x01: rm, 0x02: rm, 0x03: rm,   # fadd fsub fmul fdiv
        0x0B: rs2 == 0 and rm,                    # fsqrt
        0x04: funct3 in (0, 1, 2),                # fsgnj fsgnjn fsgnjx
        0x05: funct3 in (0, 1),                   # fmin fmax
        0x08: rs2 == 1 - fmt and rm,              # fcvt.s.d, fcvt.d.s
        0x14: funct3 in (0, 1, 2),                # fle flt feq
        0x18: rs2 < 4 and rm,                     # fcvt.{w,wu,l,lu}.fmt
        0x1A: rs2 < 4 and rm,                     # fcvt.fmt.{w,wu,l,lu}
        0x1C: rs2 == 0 and funct3 in (0, 1),      # fmv.x.fmt, fclass
        0x1E: rs2 == 0 and funct3 == 0,           # fmv.fmt.x
    }.get(funct5, False)


def classify(word):
    """What a 32-bit instruction word does in M-mode (FS on, frm = RNE):

    ("illegal",), ("ecall",), ("ebreak",), ("retire",), ("csr", number),
    ("jal", rd, offset), ("jalr", rd, rs1, offset), ("branch", funct3, rs1, rs2, offset),
    ("xret",), or ("memory", is_load, is_amo, rs1, offset, size).
    """
    opcode = word & 0x7F
    rd, funct3 = (word >> 7) & 31, (word >> 12) & 7
    rs1, rs2, funct7 = (word >> 15) & 31, (word >> 20) & 31, word >> 25
    imm_i = sext(word >> 20, 12)
    imm_s = sext((funct7 << 5) | rd, 12)
    illegal = ("illegal",)
    retire = ("retire",)
    if opcode in (0x37, 0x17):                    # lui, auipc
        return retire
    if opcode == 0x6F:
        offset = sext((word >> 31) << 20 | ((word >> 12) & 0xFF) << 12
                      | ((word >> 20) & 1) << 11 | ((word >> 21) & 0x3FF) << 1, 21)
        return ("jal", rd, offset)
    if opcode == 0x67:
        return ("jalr", rd, rs1, imm_i) if funct3 == 0 else illegal
    if opcode == 0x63:
        if funct3 in (2, 3):
            return illegal
        offset = sext((word >> 31) << 12 | ((word >> 7) & 1) << 11
                      | ((word >> 25) & 0x3F) << 5 | ((word >> 8) & 0xF) << 1, 13)
        return ("branch", funct3, rs1, rs2, offset)
    if opcode == 0x03:
        return ("memory", True, False, rs1, imm_i, LOAD_SIZES[funct3]) \
            if funct3 in LOAD_SIZES else illegal
    if opcode == 0x23:
        return ("memory", False, False, rs1, imm_s, 1 << funct3) if funct3 < 4 else illegal
    if opcode == 0x07:                            # flw, fld
        return ("memory", True, False, rs1, imm_i, 1 << funct3) if funct3 in (2, 3) else illegal
    if opcode == 0x27:                            # fsw, fsd
        return ("memory", False, False, rs1, imm_s, 1 << funct3) if funct3 in (2, 3) else illegal
    if opcode == 0x13:                            # OP-IMM; RV64 shifts have 6-bit shamt
        if funct3 == 1:
            return retire if word >> 26 == 0 else illegal
        if funct3 == 5:
            return retire if word >> 26 in (0x00, 0x10) else illegal
        return retire
    if opcode == 0x1B:                            # OP-IMM-32
        if funct3 == 0:
            return retire
        if funct3 == 1:
            return retire if funct7 == 0 else illegal
        if funct3 == 5:
            return retire if funct7 in (0x00, 0x20) else illegal
        return illegal
    if opcode == 0x33:                            # OP and the M extension
        legal = funct7 in (0x00, 0x01) or (funct7 == 0x20 and funct3 in (0, 5))
        return retire if legal else illegal
    if opcode == 0x3B:                            # OP-32
        legal = (funct7 == 0x00 and funct3 in (0, 1, 5)) or \
            (funct7 == 0x20 and funct3 in (0, 5)) or (funct7 == 0x01 and funct3 in (0, 4, 5, 6, 7))
        return retire if legal else illegal
    if opcode == 0x0F:                            # fence (unused fields ignored), fence.i
        return retire if funct3 in (0, 1) else illegal
    if opcode == 0x2F:
        funct5 = word >> 27
        if funct3 not in (2, 3) or funct5 not in AMO_FUNCT5 or (funct5 == LR and rs2):
            return illegal
        return ("memory", funct5 == LR, True, rs1, 0, 1 << funct3)
    if opcode in (0x43, 0x47, 0x4B, 0x4F):        # fmadd fmsub fnmsub fnmadd
        return retire if (word >> 25) & 3 in (0, 1) and funct3 in VALID_RM else illegal
    if opcode == 0x53:
        return retire if _op_fp_legal(word) else illegal
    if opcode == 0x73:
        if funct3 == 0:
            if word == ECALL:
                return ("ecall",)
            if word == EBREAK:
                return ("ebreak",)
            if word in (SRET, MRET):
                return ("xret",)
            if word == WFI or (funct7 == 0x09 and rd == 0):    # wfi, sfence.vma
                return retire
            return illegal
        if funct3 == 4:
            return illegal
        number = word >> 20
        writes = funct3 & 3 == 1 or rs1 != 0      # csrrw[i] always, csrrs/c[i] with rs1 != 0
        if not CSR_EXISTS[number] or (writes and number >> 10 == 3):   # read-only CSRs
            return illegal
        return ("csr", number if writes else None)
    return illegal


BRANCH_TAKEN = {
    0: lambda a, b: a == b, 1: lambda a, b: a != b,
    4: lambda a, b: sext(a, 64) < sext(b, 64), 5: lambda a, b: sext(a, 64) >= sext(b, 64),
    6: lambda a, b: a < b, 7: lambda a, b: a >= b,
}

# --- running one word ---------------------------------------------------------------


def _register_values(rng, ram_base):
    edges = [ram_base, ram_base + RAM_SIZE, 0x1000_0000, 0x0200_0000, 0x0010_0000, 0x1000, 0]
    values = []
    for _ in range(31):
        kind = rng.random()
        if kind < 0.4:
            values.append(ram_base + rng.randrange(RAM_SIZE))
        elif kind < 0.7:
            values.append(rng.choice(edges) + rng.randrange(-16, 17))
        else:
            values.append(rng.getrandbits(64))
    return values


def _claimed(machine, paddr, size):
    """Does a device answer an access of ``size`` bytes at ``paddr``?"""
    return machine.board.bus.find(paddr, size)[0] is not None


class Trial:
    def __init__(self, machine, word, length, regs):
        self.machine, self.hart = machine, machine.harts[0]
        self.word, self.length, self.regs = word, length, regs
        self.base = machine.ram.base

    def fail(self, why):
        raise AssertionError(f"{self.word:#0{2 + 2 * self.length}x}: {why}")

    def check(self, condition, why):
        if not condition:
            self.fail(why)

    def trapped(self):
        hart = self.hart
        self.check(hart.instret in (0, 1), f"instret {hart.instret}")
        if hart.instret == 1:
            return None
        status = hart.csr(L.MSTATUS)
        self.check(hart.pc == MTVEC and hart.csr(L.MEPC) == self.base,
                   f"trap to pc {hart.pc:#x} with mepc {hart.csr(L.MEPC):#x}")
        self.check(hart.priv == L.PRIV_M and status & L.MSTATUS_MPP == L.MSTATUS_MPP
                   and not status & (L.MSTATUS_MIE | L.MSTATUS_MPIE), f"mstatus {status:#x}")
        return hart.csr(L.MCAUSE)

    def expect_trap(self, cause, tvals):
        got = self.trapped()
        self.check(got == cause, f"expected cause {cause}, got {got}")
        tval = self.hart.csr(L.MTVAL)
        self.check(tval in tvals, f"mtval {tval:#x}, expected one of {[hex(t) for t in tvals]}")

    def expect_retired(self, pc, kind, link=None):
        cause = self.trapped()
        self.check(cause is None, f"{kind} trapped with cause {cause}")
        self.check(self.hart.pc == pc, f"{kind}: pc {self.hart.pc:#x}, expected {pc:#x}")
        if link is not None and link[0]:
            self.check(self.hart.x(link[0]) == link[1], f"{kind}: link {self.hart.x(link[0]):#x}")

    def expect_memory(self, is_load, is_amo, rs1, offset, size):
        address = (self.regs[rs1] + offset) & MASK64
        misaligned = address % size != 0
        in_ram = self.base <= address and address + size <= self.base + RAM_SIZE
        cause = self.trapped()
        if cause is None:
            self.check(self.hart.pc == self.base + self.length, f"pc {self.hart.pc:#x}")
            self.check(in_ram or (not is_amo and _claimed(self.machine, address, size)),
                       f"an access of {size} at {address:#x} completed outside RAM")
            self.check(not (is_amo and misaligned), f"a misaligned AMO at {address:#x} completed")
            return "completed"
        faults = {True: (L.CAUSE_LOAD_MISALIGNED, L.CAUSE_LOAD_ACCESS),
                  False: (L.CAUSE_STORE_MISALIGNED, L.CAUSE_STORE_ACCESS)}[is_load]
        self.check(cause in faults, f"memory access trapped with cause {cause}")
        self.check(not (in_ram and not misaligned), f"aligned access at {address:#x} in RAM trapped")
        if cause == faults[0]:
            self.check(misaligned, f"misaligned fault for aligned {address:#x}")
        else:
            self.check(not in_ram, f"access fault inside RAM at {address:#x}")
        tval = self.hart.csr(L.MTVAL)
        # A misaligned access may report the address of the part that faulted.
        self.check(tval == address or (misaligned and address < tval < address + size),
                   f"mtval {tval:#x} for an access of {size} at {address:#x}")
        return "faulted"

    def run(self):
        """Check the outcome the encoding decides; returns its class, for coverage."""
        hart, base, length, regs = self.hart, self.base, self.length, self.regs
        expanded = self.word if length == 4 else int(EXPANSION_TABLE[self.word]) & 0xFFFFFFFF
        kind = classify(expanded) if expanded else ("illegal",)
        steps = hart.steps
        self.machine.run(max_instructions=1)
        self.check(hart.steps == steps + 1, f"{hart.steps - steps} steps")
        self.check(hart.x(0) == 0, "x0 changed")
        name = kind[0]
        if name == "illegal":
            self.expect_trap(L.CAUSE_ILLEGAL, [self.word])
        elif name == "ecall":
            self.expect_trap(L.CAUSE_ECALL_M, [0])
        elif name == "ebreak":
            self.expect_trap(L.CAUSE_BREAKPOINT, [0, base])    # either is allowed
        elif name in ("retire", "csr"):
            self.expect_retired(base + length, name)
        elif name == "jal":
            self.expect_retired((base + kind[2]) & MASK64, name, (kind[1], base + length))
        elif name == "jalr":
            target = (regs[kind[2]] + kind[3]) & MASK64 & ~1
            self.expect_retired(target, name, (kind[1], base + length))
        elif name == "branch":
            funct3, rs1, rs2, offset = kind[1:]
            taken = BRANCH_TAKEN[funct3](regs[rs1] & MASK64, regs[rs2] & MASK64)
            self.expect_retired(base + offset if taken else base + length, name)
            name += " taken" if taken else " not taken"
        elif name == "xret":                          # mepc and sepc are 0 after reset
            self.expect_retired(0, name)
        else:
            name = "AMO " if kind[2] else "load " if kind[1] else "store "
            name += self.expect_memory(*kind[1:])
        writes_trap_csrs = kind[0] == "csr" and kind[1] in (CSR_MCAUSE, CSR_MEPC)
        if hart.instret == 1 and not writes_trap_csrs:
            self.check(hart.csr(L.MCAUSE) == SENTINEL and hart.csr(L.MEPC) == 0,
                       "retired, but mcause or mepc changed")
        return name


def _run_words(words, length, seed):
    rng = random.Random(seed)
    machine = Machine(memory_size=RAM_SIZE, io=HostIO(output=lambda data: None))
    hart = machine.harts[0]
    base = machine.ram.base
    seen = Counter()
    for word in words:
        hart.reset(base)
        state = hart.state
        state[L.CSR + L.MTVEC] = MTVEC
        state[L.CSR + L.MCAUSE] = SENTINEL
        state[L.CSR + L.MSTATUS] |= FS_INITIAL  # let FP instructions execute too
        for index in range(32):
            state[L.FREG + index] = rng.getrandbits(64) - 2**63
        regs = [0] + _register_values(rng, base)
        for index, value in enumerate(regs[1:], start=1):
            hart.set_x(index, value)
        machine.ram.write(base, int(word).to_bytes(length, "little") + b"\x13\x00\x00\x00")
        seen[Trial(machine, word, length, regs).run()] += 1
    return seen


# Each class of instruction the random words must have exercised, at least this often.
COMMON = {"illegal": 500, "retire": 500, "csr": 5, "jal": 20, "jalr": 20, "branch taken": 20,
          "branch not taken": 20, "load completed": 200, "load faulted": 200,
          "store completed": 200, "store faulted": 200}


def test_random_32bit_words():
    rng = np.random.default_rng(2026)
    words = rng.integers(0, 2**32, size=100_000, dtype=np.uint64) | 3  # 32-bit encodings
    seen = _run_words([int(w) for w in words], 4, seed=1)
    for name, least in {**COMMON, "AMO completed": 5, "AMO faulted": 50}.items():
        assert seen[name] >= least, (name, seen)


def test_random_16bit_parcels():
    rng = np.random.default_rng(2027)
    parcels = [int(p) for p in rng.integers(0, 2**16, size=100_000) if p & 3 != 3]
    parcels += [int(p) for p in rng.integers(0, 2**16, size=100_000 - len(parcels)) & 0xFFFC]
    seen = _run_words(parcels, 2, seed=2)
    for name, least in {**COMMON, "csr": 0}.items():   # no compressed CSR instructions
        assert seen[name] >= least, (name, seen)
