"""Sdtrig (Debug spec 1.0 chapter 5): tselect, tdata1-3 and tinfo, mcontrol and
mcontrol6 address triggers on execute, load and store, icount, and where a
trigger's breakpoint stands among the other exceptions (privileged spec table 3.7).

The snippets are those of test_pmp: triggers are set in M-mode, the body
runs at label 2 in the mode under test, the first trap lands at label 3.
"""

import pytest

from hartvm.cpu import layout as L
from test_pmp import ALL_RWX, DONE, ENTRY, MCAUSE, MEPC, MTVAL, NAPOT, REGION, napot, run, trap

MCONTROL, ICOUNT, MCONTROL6 = 2 << 60, 3 << 60, 6 << 60
LOAD, STORE, EXECUTE, U_BIT, S_BIT, M_BIT = 1, 2, 4, 8, 16, 64
MATCH_GE = 2 << 7


def trigger(index, tdata1, tdata2=0):
    return (f"    li t0, {index}\n    csrw tselect, t0\n    li t0, {tdata2}\n"
            f"    csrw tdata2, t0\n    li t0, {tdata1}\n    csrw tdata1, t0\n")


def test_trigger_registers(asm_program):
    hart = run(asm_program, [], f"""
    csrr s2, tdata1        /* trigger 0 after reset: mcontrol, off */
    csrr s3, tinfo
    li t0, 1
    csrw tselect, t0
    li t0, 7
    csrw tselect, t0       /* no trigger 7: tselect keeps 1 */
    csrr s4, tselect
    li t0, {MCONTROL6 | (1 << 12) | M_BIT | LOAD | (5 << 7) | (1 << 59)}
    csrw tdata1, t0        /* action 1, match 5, dmode: not implemented, read 0 */
    csrr s5, tdata1
    csrw tdata1, zero      /* type 0: a disabled trigger */
    csrr s6, tdata1
""", mode="M")
    assert hart.x(18) == MCONTROL and hart.x(19) == (1 << 2) | (1 << 3) | (1 << 6) | (1 << 15)
    assert hart.x(20) == 1
    assert hart.x(21) == MCONTROL6 | M_BIT | LOAD
    assert hart.x(22) == 15 << 60


@pytest.mark.parametrize("kind", [MCONTROL, MCONTROL6])
def test_execute_trigger_breaks_before_the_instruction(asm_program, kind):
    body = "    li a0, 1\n4:  li a0, 2\n    li a0, 3"
    setup = trigger(1, kind | S_BIT | EXECUTE) + "    la s6, 4f\n    csrw tdata2, s6\n"
    hart = run(asm_program, [ALL_RWX], body, mode="M", prologue=setup)   # M bit clear
    assert hart.x(DONE) == 1 and hart.x(10) == 3
    hart = run(asm_program, [ALL_RWX], body, mode="S", prologue=setup)
    assert hart.x(MCAUSE) == L.CAUSE_BREAKPOINT and hart.x(10) == 1
    assert hart.x(MEPC) == hart.x(MTVAL) == hart.x(22)


def test_load_and_store_triggers_match_any_byte_of_the_access(asm_program):
    setup = trigger(0, MCONTROL6 | M_BIT | STORE, REGION + 12)
    hart = run(asm_program, [], setup + f"""
    li a0, {REGION + 8}
    li a1, 77
    ld a2, 0(a0)           /* a load: the store trigger does not fire */
    sd a1, 0(a0)           /* bytes 8..15: byte 12 matches */
""", mode="M")
    assert trap(hart) == (L.CAUSE_BREAKPOINT, REGION + 8)
    hart = run(asm_program, [], setup + f"    li a0, {REGION + 16}\n    sd a0, 0(a0)", mode="M")
    assert hart.x(DONE) == 1                # bytes 16..23: no match
    hart = run(asm_program, [], trigger(0, MCONTROL | M_BIT | LOAD, REGION + 12) +
               f"    li a0, {REGION + 12}\n    li a2, 5\n    lw a2, 0(a0)", mode="M")
    assert trap(hart) == (L.CAUSE_BREAKPOINT, REGION + 12) and hart.x(12) == 5   # not loaded


def test_greater_or_equal_match(asm_program):
    setup = trigger(0, MCONTROL6 | M_BIT | STORE | MATCH_GE, REGION + 0x100)
    hart = run(asm_program, [], setup + f"""
    li a0, {REGION}
    sd a0, 0xf8(a0)
    sd a0, 0x7f8(a0)
""", mode="M")
    assert trap(hart) == (L.CAUSE_BREAKPOINT, REGION + 0x7F8)


def test_breakpoints_come_before_access_faults(asm_program):
    """Privileged spec table 3.7: an address breakpoint before page and access faults."""
    denied = [(napot(REGION, 4096), NAPOT), ALL_RWX]
    body = f"    li a0, {REGION}\n    ld a2, 0(a0)"
    hart = run(asm_program, denied, body)
    assert trap(hart) == (L.CAUSE_LOAD_ACCESS, REGION)
    hart = run(asm_program, denied, body,
               prologue=trigger(0, MCONTROL6 | S_BIT | LOAD, REGION))
    assert trap(hart) == (L.CAUSE_BREAKPOINT, REGION)
    # An instruction fetch PMP denies, with an execute trigger on it.
    code = [(napot(0x8000_0000, 64 << 10), NAPOT | 3), ALL_RWX]
    setup = trigger(0, MCONTROL6 | S_BIT | EXECUTE) + "    la t0, 2f\n    csrw tdata2, t0\n"
    hart = run(asm_program, code, "    nop", prologue=setup)
    assert trap(hart) == (L.CAUSE_BREAKPOINT, hart.x(ENTRY))


@pytest.mark.parametrize("count", [1, 3])
def test_icount_fires_after_count_instructions_in_its_modes(asm_program, count):
    body = "\n".join("    addi a0, a0, 1" for _ in range(6))
    setup = trigger(1, ICOUNT | (count << 10) | (1 << 7))   # S-mode only
    hart = run(asm_program, [ALL_RWX], "    li a0, 0\n" + body, prologue=setup)
    assert hart.x(MCAUSE) == L.CAUSE_BREAKPOINT and hart.x(MTVAL) == 0
    # li a0, 0 and count - 1 addi ran: the trap is taken before the next one
    assert hart.x(10) == count - 1
    hart = run(asm_program, [ALL_RWX], "    li a0, 0\n" + body, mode="U", prologue=setup)
    assert hart.x(DONE) == 1 and hart.x(10) == 6
