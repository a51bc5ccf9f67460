"""Zicsr, Zicntr and the M-mode traps: causes, mepc, mtval, mstatus and mtvec modes."""

import pytest

from conftest import PMP_ALLOW_ALL
from hartvm.cpu import layout as L
from test_integer import run_cases

MCAUSE, MEPC, MTVAL = 25, 26, 27   # s9, s10, s11 as set by the test trap handler


def run_trap(asm_program, body):
    machine = asm_program(body)
    machine.run(max_instructions=100_000)
    return machine.harts[0]


def test_csr_read_write_set_clear(asm_program):
    run_cases(asm_program, [
        ("    li a0, 0x5a5a\n    csrw mscratch, a0\n    csrr a2, mscratch", 0x5A5A),
        ("    li a0, 0xf0\n    csrw mscratch, a0\n    li a1, 0x0f\n    csrrs a2, mscratch, a1", 0xF0),
        ("    li a0, 0xf0\n    csrw mscratch, a0\n    li a1, 0x0f\n    csrs mscratch, a1\n"
         "    csrr a2, mscratch", 0xFF),
        ("    li a0, 0xff\n    csrw mscratch, a0\n    li a1, 0x0f\n    csrrc a2, mscratch, a1\n"
         "    csrr a2, mscratch", 0xF0),
        ("    csrwi mscratch, 17\n    csrrsi a2, mscratch, 8\n    csrr a2, mscratch", 25),
        ("    csrwi mscratch, 31\n    csrrci a2, mscratch, 1\n    csrr a2, mscratch", 30),
        ("    li a0, 9\n    csrw mscratch, a0\n    csrrwi a2, mscratch, 3", 9),
        ("    csrr a2, mhartid", 0),
        ("    csrr a2, misa", L.MISA_VALUE),
        ("    csrr a2, mvendorid", 0),
        # mepc ignores bit 0 (IALIGN=16); mtvec keeps only modes 0 and 1
        ("    li a0, 0x80001233\n    csrw mepc, a0\n    csrr a2, mepc", 0x80001232),
        # MPP cannot hold the reserved value 2; a write of it keeps the old mode
        ("    li a0, 0x1800\n    csrs mstatus, a0\n    li a0, 0x800\n    csrc mstatus, a0\n"
         "    csrr a2, mstatus\n    srli a2, a2, 11\n    andi a2, a2, 3", 3),
    ])


def test_counters_count_instructions(asm_program):
    run_cases(asm_program, [
        ("    csrr a0, minstret\n    nop\n    nop\n    csrr a1, minstret\n    sub a2, a1, a0", 3),
        ("    rdinstret a0\n    nop\n    rdinstret a1\n    sub a2, a1, a0", 2),
        ("    csrr a0, mcycle\n    nop\n    nop\n    nop\n    csrr a1, mcycle\n    sub a2, a1, a0", 4),
        ("    li a0, 1000\n    csrw minstret, a0\n    csrr a2, minstret", 1000),
        ("    li a0, 5000\n    csrw mcycle, a0\n    csrr a2, mcycle", 5000),
        # time runs at a tenth of the cycle rate: 100 cycles later it is 10 ticks on
        ("    rdtime a0\n" + "    nop\n" * 99 + "    rdtime a1\n    sub a2, a1, a0", 10),
        ("    csrr a0, mhpmcounter3\n    nop\n    csrr a2, mhpmcounter3", 0),
    ])


@pytest.mark.parametrize("body, cause, tval", [
    (".word 0xffffffff", 2, 0xFFFFFFFF),
    (".word 0x0000707f", 2, 0x0000707F),                      # opcode 0x7f reserved
    ("csrr a0, 0x7c0", 2, 0x7C002573),                       # custom CSR not implemented
    ("csrw mvendorid, a0", 2, 0xF1151073),                   # read-only CSR
    ("csrw cycle, a0", 2, 0xC0051073),
    (".half 0x0000", 2, 0),                                  # the all-zero parcel
    (".half 0x6001", 2, 0x6001),                             # c.lui x0,... with imm 0 reserved
    ("ebreak", 3, None),
    ("c.ebreak", 3, None),
    ("ecall", 11, 0),
    ("li a0, 0x1000000\n    ld a1, 0(a0)", 5, 0x1000000),    # nothing mapped there
    ("li a0, 0x1000000\n    sw a1, 0(a0)", 7, 0x1000000),
    ("li a0, 0x10000000\n    ld a1, 0x100(a0)", 5, 0x10000100),  # past the UART
    ("li a0, 0x2000000\n    sb a1, 0(a0)", 7, 0x2000000),    # CLINT takes 4/8-byte accesses
])
def test_exceptions(asm_program, body, cause, tval):
    hart = run_trap(asm_program, "    .option rvc\n1:  " + body + "\n    la s8, 1b")
    assert hart.x(MCAUSE) == cause
    if tval is None:  # ebreak: mtval is the address of the instruction
        tval = hart.x(24)
    assert hart.x(MTVAL) == tval
    assert hart.priv == L.PRIV_M


def test_mepc_and_mstatus_on_trap_and_mret(asm_program):
    hart = run_trap(asm_program, """
    li a0, 0x8          /* MIE on */
    csrs mstatus, a0
    la a1, 1f
1:  ecall
    csrr a4, mstatus
""")
    assert hart.x(MEPC) == hart.x(11) + 4  # the handler stepped over the ecall
    status = hart.x(14)
    assert status & L.MSTATUS_MIE  # mret restored MIE from MPIE
    assert (status & L.MSTATUS_MPP) == 0  # and left MPP at U, the least-privileged mode


def test_fetch_access_fault(asm_program):
    hart = run_trap(asm_program, """
    la a0, 2f
    csrw mtvec, a0
    li a1, 0x40000000
    jr a1
    .align 2
2:  csrr s9, mcause
    csrr s10, mepc
    csrr s11, mtval
""")
    assert hart.x(MCAUSE) == 1 and hart.x(MEPC) == 0x40000000 and hart.x(MTVAL) == 0x40000000


def test_user_mode_ecall_and_privileged_instruction(asm_program):
    hart = run_trap(asm_program, PMP_ALLOW_ALL + """
    la a0, 2f
    csrw mtvec, a0
    li a0, 0x1800       /* MPP = U */
    csrc mstatus, a0
    la a0, 1f
    csrw mepc, a0
    mret
1:  csrr a1, mstatus    /* U-mode: illegal */
    .align 2
2:  csrr s9, mcause
    csrr s11, mtval
    csrr a2, mstatus
    li a3, 3
    bne s9, a3, 3f      /* only the first trap goes to the U-mode ecall test */
3:
""")
    assert hart.x(MCAUSE) == 2
    assert hart.x(MTVAL) == 0x300025F3  # csrr a1, mstatus
    assert (hart.x(12) & L.MSTATUS_MPP) == 0  # trapped from U


def test_timer_interrupt_wakes_wfi_and_vectors(asm_program):
    """A CLINT timer interrupt in vectored mode lands at mtvec + 4*7."""
    hart = run_trap(asm_program, """
    la a0, vectors
    ori a0, a0, 1
    csrw mtvec, a0
    li a0, 0x200bff8
    ld a1, 0(a0)            /* mtime */
    addi a1, a1, 500
    li a2, 0x2004000
    sd a1, 0(a2)            /* mtimecmp = now + 500 ticks */
    li a0, 0x80
    csrs mie, a0            /* MTIE */
    csrsi mstatus, 8        /* MIE */
    li s8, 0
    wfi
    j done
    .align 6
    .option push
    .option norvc           /* every vector entry is one 4-byte jump */
vectors:
    j bad
    .rept 6
    j bad
    .endr
    .option pop
    li s8, 7                /* entry 7: machine timer */
    csrr s9, mcause
    li a0, -1
    li a2, 0x2004000
    sd a0, 0(a2)            /* disarm */
    li a0, 0x200bff8
    ld s7, 0(a0)            /* mtime at the interrupt */
    mret
bad:
    li s8, 99
    mret
done:
""")
    assert hart.x(24) == 7
    assert hart.x(MCAUSE) == (1 << 63) | 7


def test_software_interrupt_through_clint_msip(asm_program):
    hart = run_trap(asm_program, """
    li a0, 0x8
    csrs mie, a0            /* MSIE */
    csrsi mstatus, 8
    li a1, 0x2000000
    li a0, 1
    sw a0, 0(a1)            /* msip = 1: the interrupt is taken right after */
    li a0, 0
    sw a0, 0(a1)
""")
    assert hart.x(MCAUSE) == (1 << 63) | 3


def test_wfi_with_nothing_to_wake_halts(asm_program):
    machine = asm_program("    wfi")
    result = machine.run(max_instructions=100_000)
    assert result.stop.name == "HALTED"


def test_delegated_traps_go_to_supervisor_mode(asm_program):
    """medeleg/mideleg: a U-mode ecall and an S software interrupt land at stvec in S-mode."""
    hart = run_trap(asm_program, PMP_ALLOW_ALL + """
    li t0, 1 << 8            /* delegate ecall from U */
    csrw medeleg, t0
    li t0, 1 << 1            /* and the supervisor software interrupt */
    csrw mideleg, t0
    la t0, 5f
    csrw stvec, t0
    li t0, 0x1800
    csrc mstatus, t0
    li t0, 0x800             /* MPP = S */
    csrs mstatus, t0
    la t0, 2f
    csrw mepc, t0
    li s2, 0
    mret
2:  /* S-mode: enter U-mode at 3 */
    li t0, 0x100
    csrc sstatus, t0         /* SPP = U */
    la t0, 3f
    csrw sepc, t0
    sret
3:  ecall                    /* from U: delegated, handled in S */
    j 6f
    .align 2
5:  csrr s3, scause
    csrr s4, sepc
    csrr s5, sstatus
    addi s2, s2, 1
    li t0, 1
    beq s2, t0, 7f
    csrci sip, 2             /* second entry: the software interrupt; clear it */
    j 8f
7:  mv s8, s3                /* the first entry's scause and sstatus */
    mv a0, s5
    csrsi sie, 2             /* SSIE */
    csrsi sstatus, 2         /* SIE */
    csrsi sip, 2             /* raise SSIP: taken at once, in S-mode */
8:  csrr s6, scause
    mv s7, s2
    li t6, 0x100000          /* end the test from S-mode */
    li t5, 0x5555
    sw t5, 0(t6)
6:
""")
    assert hart.x(24) == L.CAUSE_ECALL_U          # s8: the first scause
    assert hart.x(23) == 2                         # s7: the handler ran twice
    assert hart.x(22) == (1 << 63) | 1             # s6: supervisor software interrupt
    assert hart.priv == L.PRIV_S
    assert not hart.x(10) & L.MSTATUS_SPP          # sstatus.SPP = U for the ecall
    assert hart.x(21) & L.MSTATUS_SPP              # and S for the interrupt
    assert hart.x(25) == 2**64 - 1                 # nothing reached the M-mode handler


def test_pmp_registers_keep_legal_values_and_honour_locks(asm_program):
    run_cases(asm_program, [
        # R=0 W=1 is reserved: the write keeps neither (entry 0: write 0x02 -> 0)
        ("    li a0, 0x0f02\n    csrw pmpcfg0, a0\n    csrr a2, pmpcfg0", 0x0F00),
        ("    li a0, -1\n    csrw pmpaddr3, a0\n    csrr a2, pmpaddr3", (1 << 54) - 1),
        # lock entry 1 (L=1, TOR): pmpaddr1 and pmpaddr0 (its base) are frozen
        ("    li a0, 0x1234\n    csrw pmpaddr0, a0\n    csrw pmpaddr1, a0\n"
         "    li a0, 0x8f00\n    csrw pmpcfg0, a0\n    li a0, 0x5678\n    csrw pmpaddr0, a0\n"
         "    csrw pmpaddr1, a0\n    csrr a2, pmpaddr1", 0x1234),
        ("    csrr a2, pmpaddr0", 0x1234),
        ("    li a0, 0\n    csrw pmpcfg0, a0\n    csrr a2, pmpcfg0", 0x8F00),   # locked cfg
    ])


TWO_HARTS = """
    csrr a0, mhartid
    bnez a0, 9f
    li a0, 0x200bff8
    ld a1, 0(a0)
    addi a1, a1, 1000
    li a2, 0x2004000
    sd a1, 0(a2)             /* hart 0: timer in 1000 ticks */
    li a0, 0x80
    csrs mie, a0
    wfi                      /* both harts asleep; only hart 0 has a deadline */
    j 8f
9:  wfi                      /* hart 1: no timer at all */
    j 9b
8:
"""


def test_all_harts_asleep_with_one_deadline_wakes_the_right_hart(toolchain):
    from conftest import FINISHER_PASS, SNIPPET_TEMPLATE, assemble
    from hartvm import HostIO, Machine
    machine = Machine(memory_size=16 << 20, harts=2, io=HostIO(output=lambda data: None))
    machine.load_kernel(assemble(SNIPPET_TEMPLATE.format(body=TWO_HARTS, finish=FINISHER_PASS)))
    result = machine.run(max_instructions=1_000_000)
    assert result.stop.name == "EXITED" and result.status == 0


def test_instruction_limit_holds_across_harts(toolchain):
    from conftest import assemble
    from hartvm import HostIO, Machine
    loop = "    .section .text.init\n    .globl _start\n_start:\n    j _start\n"
    machine = Machine(memory_size=16 << 20, harts=4, io=HostIO(output=lambda data: None))
    machine.load_kernel(assemble(loop))
    result = machine.run(max_instructions=1000)
    assert result.stop.name == "INSTRUCTION_LIMIT" and result.instructions == 1000
