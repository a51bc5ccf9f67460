"""The A extension: AMOs on words and doublewords, LR/SC, and their alignment rules."""

import pytest

from reference import AMOS, EDGE_VALUES, s32, s64, u64
from test_integer import SCRATCH, run_cases

PAIRS = [(a, b) for a in EDGE_VALUES[::2] for b in EDGE_VALUES[1::2]]


@pytest.mark.parametrize("name", sorted(AMOS))
@pytest.mark.parametrize("width", ["w", "d"])
def test_amo_returns_old_value_and_stores_result(asm_program, name, width):
    bits = 32 if width == "w" else 64
    model = AMOS[name]
    cases = []
    for old, src in PAIRS:
        setup = (f"    li a0, {old}\n    sd a0, {SCRATCH}(gp)\n    addi a3, gp, {SCRATCH}\n"
                 f"    li a1, {src}\n    {name}.{width} a2, a1, (a3)")
        loaded = s32(old) if bits == 32 else old
        cases.append((setup, loaded))
        stored = model(old, src, bits) % 2**bits
        # the untouched upper word of the doubleword stays as it was for .w
        memory = stored if bits == 64 else (u64(old) & ~0xFFFFFFFF) | stored
        cases.append((setup + f"\n    ld a2, {SCRATCH}(gp)", s64(memory)))
    run_cases(asm_program, cases)


def test_lr_sc(asm_program):
    prefix = f"    addi a3, gp, {SCRATCH}\n    li a0, 0x1234\n    sd a0, 0(a3)\n"
    cases = [
        # sc without a reservation (none yet in this program) fails (writes 1), stores nothing
        (prefix + "    li a0, 77\n    sc.d a2, a0, (a3)", 1),
        (prefix + "    li a0, 77\n    sc.d a4, a0, (a3)\n    ld a2, 0(a3)", 0x1234),
        # a reserved sc succeeds (writes 0) and stores
        (prefix + "    lr.d a1, (a3)\n    li a0, 77\n    sc.d a2, a0, (a3)", 0),
        (prefix + "    lr.d a1, (a3)\n    li a0, 77\n    sc.d a4, a0, (a3)\n    ld a2, 0(a3)", 77),
        # lr loads the value
        (prefix + "    lr.d a2, (a3)", 0x1234),
        (prefix + "    li a0, -5\n    sw a0, 0(a3)\n    lr.w a2, (a3)", -5),
        # a second sc after a successful one fails: sc consumes the reservation
        (prefix + "    lr.d a1, (a3)\n    sc.d a4, a0, (a3)\n    sc.d a2, a0, (a3)", 1),
        # sc to another address than the reserved one fails
        (prefix + "    lr.d a1, (a3)\n    sc.d a2, a0, 8(a3)", 1),
        # a trap between lr and sc drops the reservation
        (prefix + "    lr.d a1, (a3)\n    ecall\n    sc.d a2, a0, (a3)", 1),
    ]
    run_cases(asm_program, [(code.replace("8(a3)", "(a5)").replace(
        "sc.d a2, a0, (a5)", "addi a5, a3, 8\n    sc.d a2, a0, (a5)"), v) for code, v in cases],
              traps_expected=True)


@pytest.mark.parametrize("instruction, cause", [
    ("amoadd.w a2, a1, (a3)", 6), ("amoswap.d a2, a1, (a3)", 6),
    ("lr.w a2, (a3)", 4), ("lr.d a2, (a3)", 4), ("sc.d a2, a1, (a3)", 6),
])
def test_misaligned_atomics_fault(asm_program, instruction, cause):
    machine = asm_program(f"    addi a3, gp, {SCRATCH + 2}\n    li a2, 99\n    {instruction}")
    machine.run(max_instructions=10_000)
    hart = machine.harts[0]
    assert hart.x(25) == cause            # s9 = mcause
    assert hart.x(27) == hart.x(13)       # s11 = mtval = the address
    assert hart.x(12) == 99               # rd unchanged


def test_atomics_outside_ram_are_access_faults(asm_program):
    machine = asm_program("    li a3, 0x10000000\n    amoor.w a2, a1, (a3)")
    machine.run(max_instructions=10_000)
    assert machine.harts[0].x(25) == 7 and machine.harts[0].x(27) == 0x10000000
