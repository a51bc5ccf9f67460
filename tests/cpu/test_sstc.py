"""Sstc: stimecmp, menvcfg.STCE and the supervisor timer interrupt they drive.

Privileged spec, chapter "Sstc": while menvcfg.STCE is set, mip.STIP is
(time >= stimecmp) and software cannot write it; S-mode may access stimecmp
only when mcounteren.TM and menvcfg.STCE are both set (QEMU 7.2's ``sstc``
predicate, target/riscv/csr.c). Time follows the instruction count, so the
interrupt is taken at the very tick stimecmp names, and a hart asleep in WFI
wakes at it.
"""

import pytest

from conftest import PMP_ALLOW_ALL
from hartvm.cpu import layout as L
from test_integer import run_cases

MCAUSE = 25          # s9, as set by the test trap handler
STIMECMP = 0x14D
STCE = "    li t0, 1\n    slli t0, t0, 63\n    csrs menvcfg, t0\n"


def to_mode(mode, mcounteren=-1, stce=True):
    """M-mode code that sets mcounteren and menvcfg.STCE, then goes on at
    label 2 in ``mode`` (S or U)."""
    mpp = {"S": 0x800, "U": 0}[mode]
    return PMP_ALLOW_ALL + f"""
    li t0, {mcounteren}
    csrw mcounteren, t0
{STCE if stce else ""}
    li t0, 0x1800
    csrc mstatus, t0
    li t0, {mpp}
    csrs mstatus, t0
    la t0, 2f
    csrw mepc, t0
    mret
2:
"""


def test_stimecmp_and_stce_read_back_in_m_mode(asm_program):
    run_cases(asm_program, [
        (f"    li a0, 0x123456789abc\n    csrw {STIMECMP}, a0\n    csrr a2, {STIMECMP}",
         0x123456789ABC),
        # menvcfg: FIOM and STCE are writable, the rest reads as zero
        ("    li a0, -1\n    csrw menvcfg, a0\n    csrr a2, menvcfg", L.MENVCFG_STCE | 1),
        # M-mode may use stimecmp whatever STCE and mcounteren say
        (f"    csrw menvcfg, zero\n    csrw mcounteren, zero\n    li a0, 77\n"
         f"    csrw {STIMECMP}, a0\n    csrr a2, {STIMECMP}", 77),
    ])


@pytest.mark.parametrize("mcounteren, stce, allowed", [
    (-1, True, True),
    (L.COUNTEREN_TM, True, True),
    (-1 & ~L.COUNTEREN_TM, True, False),   # TM clear
    (-1, False, False),                    # STCE clear
    (0, False, False),
])
def test_supervisor_access_needs_tm_and_stce(asm_program, mcounteren, stce, allowed):
    machine = asm_program(to_mode("S", mcounteren, stce) + f"""
    li a0, 1234
    li s9, -1
    csrw {STIMECMP}, a0
    mv s2, s9                /* the write's trap, if any */
    li s9, -1
    li a2, 0
    csrr a2, {STIMECMP}
    mv s3, s9
""")
    machine.run(max_instructions=10_000)
    hart = machine.harts[0]
    assert hart.priv == L.PRIV_S
    if allowed:
        assert (hart.x(18), hart.x(19), hart.x(12)) == (2**64 - 1, 2**64 - 1, 1234)
    else:
        assert (hart.x(18), hart.x(19), hart.x(12)) == (L.CAUSE_ILLEGAL, L.CAUSE_ILLEGAL, 0)


def test_user_mode_never_reaches_stimecmp(asm_program):
    machine = asm_program(to_mode("U") + f"    csrr a2, {STIMECMP}\n")
    machine.run(max_instructions=10_000)
    assert machine.harts[0].x(MCAUSE) == L.CAUSE_ILLEGAL


def test_stip_follows_time_against_stimecmp(asm_program):
    run_cases(asm_program, [
        # STCE=1: stimecmp in the past raises STIP, in the future clears it
        (STCE + f"    csrw {STIMECMP}, zero\n    csrr a2, mip\n    andi a2, a2, 32", 32),
        (STCE + f"    csrw {STIMECMP}, zero\n    li a0, -1\n    csrw {STIMECMP}, a0\n"
         "    csrr a2, mip\n    andi a2, a2, 32", 0),
        # the time reaches stimecmp: STIP rises without any write
        (STCE + f"    rdtime a0\n    addi a0, a0, 20\n    csrw {STIMECMP}, a0\n"
         "    csrr a1, mip\n    andi a1, a1, 32\n    bnez a1, 9f\n1:  rdtime a1\n"
         "    bltu a1, a0, 1b\n"
         "    csrr a2, mip\n    andi a2, a2, 32\n9:", 32),
        # software writes to STIP are ignored while STCE=1 ...
        (STCE + f"    li a0, -1\n    csrw {STIMECMP}, a0\n    li a1, 32\n"
         "    csrs mip, a1\n    csrr a2, mip\n    andi a2, a2, 32", 0),
        (STCE + f"    csrw {STIMECMP}, zero\n    li a1, 32\n    csrc mip, a1\n"
         "    csrr a2, mip\n    andi a2, a2, 32", 32),
        # ... and with STCE=0 STIP is M-mode's to write (it keeps the value the
        # timer gave it) and stimecmp drives nothing: the spec's "as if this
        # extension were not implemented" (QEMU 7.2 would still raise STIP on
        # this M-mode write of stimecmp: time_helper.c riscv_timer_write_timecmp)
        ("    csrw menvcfg, zero\n    csrr a2, mip\n    andi a2, a2, 32", 32),
        (f"    li a1, 32\n    csrc mip, a1\n    csrw {STIMECMP}, zero\n"
         "    csrr a2, mip\n    andi a2, a2, 32", 0),
        ("    li a1, 32\n    csrs mip, a1\n    csrr a2, mip\n    andi a2, a2, 32", 32),
    ])


# S-mode code: arm stimecmp {delay} ticks ahead, take the (delegated) supervisor
# timer interrupt, whose handler records scause (s3), the time (s4) and
# stimecmp (s5) and disarms it; {wait} is what the hart does meanwhile.
S_TIMER = """
    li t0, 1 << 5
    csrw mideleg, t0         /* supervisor timer interrupts to S-mode */
    la t0, 5f
    csrw stvec, t0
""" + to_mode("S") + f"""
    li s3, 0
    rdtime a0
    li t1, {{delay}}
    add a0, a0, t1
    csrw {STIMECMP}, a0
    li t0, 1 << 5
    csrs sie, t0             /* STIE */
    csrsi sstatus, 2         /* SIE */
1:  {{wait}}
    beqz s3, 1b
    j 6f
    .align 2
5:  rdtime s4                /* first: the time the interrupt came at */
    csrr s3, scause
    csrr s5, {STIMECMP}
    csrr s6, sip
    li t0, -1
    csrw {STIMECMP}, t0      /* disarm: STIP falls */
    csrr s7, sip
    sret
6:  li t6, 0x100000          /* end the test from S-mode */
    li t5, 0x5555
    sw t5, 0(t6)
"""


@pytest.mark.parametrize("wait", ["nop", "wfi"])
def test_supervisor_timer_interrupt_comes_at_stimecmp(asm_program, wait):
    """Spinning, the hart takes it at the tick stimecmp names; in WFI, the
    machine wakes the hart at that tick (without Sstc's deadline it would
    halt: nothing else is armed)."""
    machine = asm_program(S_TIMER.format(wait=wait, delay=500))
    result = machine.run(max_instructions=100_000)
    hart = machine.harts[0]
    assert result.stop.name == "EXITED" and result.status == 0
    assert hart.x(19) == (1 << 63) | L.IRQ_STI                  # s3: scause
    assert hart.x(20) == hart.x(21)                             # s4 == s5: on the tick
    assert hart.x(22) & L.MIP_STIP and not hart.x(23) & L.MIP_STIP
    assert hart.x(MCAUSE) == 2**64 - 1                          # nothing went to M-mode


def test_machine_mode_takes_an_undelegated_supervisor_timer_interrupt(asm_program):
    machine = asm_program(STCE + f"""
    la t0, 5f
    csrw mtvec, t0
    rdtime a0
    addi a0, a0, 300
    csrw {STIMECMP}, a0
    li t0, 1 << 5
    csrs mie, t0             /* STIE, not delegated: taken in M-mode */
    csrsi mstatus, 8         /* MIE */
1:  wfi
    j 1b
    .align 2
5:  rdtime s4
    csrr s3, mcause
    csrr s5, {STIMECMP}
""")
    result = machine.run(max_instructions=100_000)
    hart = machine.harts[0]
    assert result.stop.name == "EXITED"
    assert hart.x(19) == (1 << 63) | L.IRQ_STI and hart.x(20) == hart.x(21)


def test_an_armed_stimecmp_survives_a_snapshot(asm_program):
    """stimecmp and menvcfg live in the hart's state: a machine snapshotted
    asleep in WFI, restored into a new machine, wakes at the same tick."""
    from hartvm import HostIO, Machine
    from hartvm.vmm.snapshot import decode, encode
    # (a deadline beyond the first round, which until() is checked after)
    machine = asm_program(S_TIMER.format(wait="wfi", delay=1_000_000))
    result = machine.run(until=lambda: machine.sleeping[0], max_instructions=10_000)
    assert result.stop.name == "STOPPED" and machine.harts[0].x(19) == 0   # asleep, no interrupt
    sections = [encode(component.save()) for _, component in machine.components()]
    own = encode(machine.save())
    memory = machine.ram.read(machine.ram.base, machine.ram.size)

    clone = Machine(memory_size=machine.ram.size, io=HostIO(output=lambda data: None))
    clone.ram.write(clone.ram.base, memory)
    for (_, component), data in zip(clone.components(), sections):
        component.restore(decode(data))
    clone.restore(decode(own))
    result = clone.run(max_instructions=100_000)
    hart = clone.harts[0]
    assert result.stop.name == "EXITED" and result.status == 0
    assert hart.x(19) == (1 << 63) | L.IRQ_STI and hart.x(20) == hart.x(21)
