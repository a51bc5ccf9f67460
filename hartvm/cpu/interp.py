"""The run loop: fetch, decode and execute until the budget is spent or an exit.

``run`` is the whole contract between the hart and the rest of the machine
(ARCHITECTURE.md, "The hot loop contract"): it executes up to ``budget``
instructions on the state array ``h`` and RAM, and returns an ``EXIT_*``
reason. Interrupts are checked between blocks: a block ends when the budget
or the next timer deadline is reached, or when an instruction returns an
odd pc (a CSR write, a trap return, WFI, an MMIO access) so that anything
that may change which interrupts are deliverable is seen at once.
The timers are the ACLINT's mtimecmp (mip.MTIP) and, while menvcfg.STCE is
set, Sstc's stimecmp (mip.STIP); each is a deadline at which a block ends.
So is the step where an armed Sdtrig icount trigger runs out (triggers.py),
which then fires before the next instruction; while none is armed this costs
one test of h[CHECKS] per block.
"""

from .jit import jit, jit_inline

from .alu import illegal, ltu, op, op32, op_imm, op_imm32
from .csr import mtime
from .layout import (
    CAUSE_BREAKPOINT, CAUSE_FETCH_ACCESS, CAUSE_ILLEGAL, CHECKS, CSR, CYCLE, CYCLES_PER_TICK, EXIT_BUDGET,
    EXIT_EBREAK, EXIT_MMIO, EXIT_REASON, EXIT_WATCH, INSTRET, MENVCFG, MIP, MIP_MTIP, MIP_STIP, MTIMECMP,
    PARCEL, PC, RAM_BASE, STEPS, STIMECMP, ROM_BASE, ROM_SIZE,
)
from .fpu import fused, load_fp, op_fp, store_fp
from .loadstore import amo, load, store
from .mmu import ACCESS_FETCH, code_page_cached, translate
from .system import system
from .trap import pending_interrupt, take_trap
from .triggers import CHECK_ICOUNT, icount_block


@jit_inline
def parcel(h, m16, rom16, ram_base, paddr):
    """The 16-bit instruction parcel at ``paddr`` in RAM or the boot ROM, or -1."""
    offset = paddr - ram_base
    if 0 <= offset < 2 * m16.size:
        return m16[offset >> 1] & 0xFFFF
    offset = paddr - h[ROM_BASE]
    if 0 <= offset < h[ROM_SIZE]:
        return rom16[offset >> 1] & 0xFFFF
    return -1


@jit_inline
def fetch(h, m16, m64, rom16, ram_base, pc):
    """(instruction, length, paddr) at ``pc``, or (cause, 0, tval) when the fetch faults.

    A 16-bit parcel whose low bits are not 11 is a compressed instruction
    (ISA spec 1.5); otherwise the next parcel holds the upper half, which
    may lie on the next page and so is translated on its own.
    """
    paddr, fault = translate(h, m64, ram_base, pc, ACCESS_FETCH, 2)
    if fault >= 0:
        return fault, 0, pc
    low = parcel(h, m16, rom16, ram_base, paddr)
    if low < 0:
        return CAUSE_FETCH_ACCESS, 0, pc
    if low & 3 != 3:
        return low, 2, paddr
    # The paddr returned is the first parcel's: the run loop maps pc's page
    # to it (the second page of a straddling instruction may lie anywhere).
    high_paddr = paddr + 2
    if pc & 0xFFF == 0xFFE:
        high_paddr, fault = translate(h, m64, ram_base, pc + 2, ACCESS_FETCH, 2)
        if fault >= 0:
            return fault, 0, pc + 2
    high = parcel(h, m16, rom16, ram_base, high_paddr)
    if high < 0:
        return CAUSE_FETCH_ACCESS, 0, pc + 2
    return (((high << 16) | low) ^ 0x80000000) - 0x80000000, 4, paddr


@jit_inline
def branch(h, insn, pc, ilen):
    """BRANCH: beq, bne, blt, bge, bltu, bgeu."""
    a = h[(insn >> 15) & 31]
    b = h[(insn >> 20) & 31]
    funct3 = (insn >> 12) & 7
    if funct3 == 0:
        taken = a == b
    elif funct3 == 1:
        taken = a != b
    elif funct3 == 4:
        taken = a < b
    elif funct3 == 5:
        taken = a >= b
    elif funct3 == 6:
        taken = ltu(a, b)
    elif funct3 == 7:
        taken = not ltu(a, b)
    else:
        return illegal(h, insn, pc, ilen)
    if taken:
        imm = ((insn >> 31) << 12) | (((insn >> 7) & 1) << 11) \
            | (((insn >> 25) & 0x3F) << 5) | (((insn >> 8) & 0xF) << 1)
        return pc + imm
    return pc + ilen


@jit_inline
def jumps_and_upper(h, insn, pc, ilen):
    """JAL, JALR, LUI and AUIPC (ISA spec 2.4-2.5)."""
    opcode = insn & 0x7F
    rd = (insn >> 7) & 31
    if opcode == 0x6F:                       # jal
        imm = ((insn >> 31) << 20) | (((insn >> 12) & 0xFF) << 12) \
            | (((insn >> 20) & 1) << 11) | (((insn >> 21) & 0x3FF) << 1)
        h[rd] = pc + ilen
        return pc + imm
    if opcode == 0x67:                       # jalr
        if (insn >> 12) & 7:
            return illegal(h, insn, pc, ilen)
        target = (h[(insn >> 15) & 31] + (insn >> 20)) & ~1
        h[rd] = pc + ilen
        return target
    if opcode == 0x37:                       # lui
        h[rd] = (insn >> 12) << 12
    else:                                    # auipc
        h[rd] = pc + ((insn >> 12) << 12)
    return pc + ilen


@jit_inline
def execute(h, m8, m16, m32, m64, ram_base, insn, pc, ilen):
    """Run one (expanded) instruction; return the next pc, odd to end the block."""
    opcode = insn & 0x7F
    if opcode == 0x13:
        return op_imm(h, insn, pc, ilen)
    if opcode == 0x03:
        return load(h, m8, m16, m32, m64, ram_base, insn, pc, ilen)
    if opcode == 0x23:
        return store(h, m8, m16, m32, m64, ram_base, insn, pc, ilen)
    if opcode == 0x63:
        return branch(h, insn, pc, ilen)
    if opcode == 0x33:
        return op(h, insn, pc, ilen)
    if opcode == 0x3B:
        return op32(h, insn, pc, ilen)
    if opcode == 0x1B:
        return op_imm32(h, insn, pc, ilen)
    if opcode == 0x6F or opcode == 0x67 or opcode == 0x37 or opcode == 0x17:
        return jumps_and_upper(h, insn, pc, ilen)
    if opcode == 0x2F:
        return amo(h, m8, m16, m32, m64, ram_base, insn, pc, ilen)
    if opcode == 0x07:
        return load_fp(h, m8, m16, m32, m64, ram_base, insn, pc, ilen)
    if opcode == 0x27:
        return store_fp(h, m8, m16, m32, m64, ram_base, insn, pc, ilen)
    if opcode == 0x53:
        return op_fp(h, insn, pc, ilen)
    if opcode & 0x73 == 0x43:                # fmadd, fmsub, fnmsub, fnmadd
        return fused(h, insn, pc, ilen)
    if opcode == 0x0F:
        funct3 = (insn >> 12) & 7
        if funct3 == 0 or funct3 == 1:       # fence, fence.i: nothing is cached
            return pc + ilen
    return illegal(h, insn, pc, ilen)


@jit
def block(h, m8, m16, m32, m64, rom16, ctable, pc, limit):
    """Execute up to ``limit`` steps from ``pc``: (steps, next pc).

    A step is an instruction executed or a trap taken; both count towards
    the retired-instruction and cycle counters, which are brought up to
    date here before any SYSTEM instruction can read them.
    """
    steps = 0
    counted = 0
    ram_base = h[RAM_BASE]
    # The page being executed: its virtual page number and the m16 index of its
    # first parcel. Within a block nothing changes its translation (traps,
    # trap returns, satp writes and sfence.vma all end the block).
    code_page = -1
    code_index = 0
    while steps < limit:
        steps += 1
        offset = pc & 0xFFF
        ilen = 0
        if pc >> 12 == code_page:
            index = code_index + (offset >> 1)
            word = m16[index] & 0xFFFF
            if word & 3 != 3:
                ilen = 2
            elif offset != 0xFFE:
                word = (m16[index + 1] << 16) | word
                ilen = 4
        if ilen == 0:
            word, ilen, paddr = fetch(h, m16, m64, rom16, ram_base, pc)
            if ilen == 0:
                npc = take_trap(h, word, paddr, pc, False)
                if h[EXIT_REASON] == EXIT_WATCH:
                    steps -= 1      # the machine makes the fetch (checks.py)
                else:
                    pc = npc & ~1
                break
            if 0 <= paddr - ram_base < 2 * m16.size and \
                    (h[CHECKS] == 0 or code_page_cached(h, pc)):
                code_page = pc >> 12
                code_index = (paddr - ram_base - offset) >> 1
        insn = word
        if ilen == 2:
            insn = ctable[word]
            h[PARCEL] = word
            if insn == 0:
                pc = take_trap(h, CAUSE_ILLEGAL, word, pc, False) & ~1
                break
        if insn & 0x7F == 0x73:
            h[INSTRET] += steps - 1 - counted
            h[CYCLE] += steps - 1 - counted
            h[STEPS] += steps - 1 - counted
            counted = steps - 1
            npc = system(h, insn, pc, ilen)
        else:
            npc = execute(h, m8, m16, m32, m64, ram_base, insn, pc, ilen)
        h[0] = 0
        if npc & 1:
            reason = h[EXIT_REASON]
            if reason == EXIT_MMIO or reason == EXIT_EBREAK or reason == EXIT_WATCH:
                # the machine completes it (MMIO, a watched access), or a debugger stops at it
                steps -= 1
            else:
                pc = npc & ~1
            break
        pc = npc
    h[INSTRET] += steps - counted
    h[CYCLE] += steps - counted
    h[STEPS] += steps - counted
    return steps, pc


@jit_inline
def timer(h, now, compare, bit, limit):
    """Set mip ``bit`` while ``now >= compare`` (unsigned), clear it before;
    return ``limit`` cut to the steps left until the cycle where now reaches compare."""
    if ltu(now, compare):
        h[CSR + MIP] &= ~bit
        ticks = compare - now        # positive: compare is ahead
        if 0 < ticks <= limit:
            # stop exactly at the cycle where the time reaches compare
            limit = min(limit, ticks * CYCLES_PER_TICK - h[CYCLE] % CYCLES_PER_TICK)
    else:
        h[CSR + MIP] |= bit
    return limit


@jit
def run(h, m8, m16, m32, m64, rom16, ctable, budget):
    """Execute up to ``budget`` instructions; return the EXIT_* reason."""
    h[EXIT_REASON] = EXIT_BUDGET
    pc = h[PC]
    done = 0
    while done < budget:
        now = mtime(h)
        limit = timer(h, now, h[MTIMECMP], MIP_MTIP, budget - done)
        if h[CSR + MENVCFG] < 0:
            # menvcfg.STCE (bit 63): Sstc's stimecmp drives STIP (privileged spec, Sstc)
            limit = timer(h, now, h[CSR + STIMECMP], MIP_STIP, limit)
        irq = pending_interrupt(h)
        if irq >= 0:
            pc = take_trap(h, irq, 0, pc, True) & ~1
            if h[EXIT_REASON] != EXIT_BUDGET:
                break           # the host hooks traps (EXIT_TRAP)
        if h[CHECKS] & CHECK_ICOUNT:
            fire, limit = icount_block(h, limit)
            if fire:
                # A breakpoint exception before the instruction at pc (Debug spec 5.7.14).
                pc = take_trap(h, CAUSE_BREAKPOINT, 0, pc, False) & ~1
                h[INSTRET] += 1     # take_trap uncounts a step that was never counted
                if h[EXIT_REASON] != EXIT_BUDGET:
                    break
                continue
        steps, pc = block(h, m8, m16, m32, m64, rom16, ctable, pc, limit)
        done += steps
        if h[EXIT_REASON] != EXIT_BUDGET:
            break
    h[PC] = pc
    return h[EXIT_REASON]
