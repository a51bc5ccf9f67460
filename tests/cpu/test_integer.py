"""RV64I and M: every computational instruction against the Python reference model.

Each test assembles one program that applies an instruction to many operand
pairs (the edge values of ``reference.EDGE_VALUES``) and stores each result
in a data area; the results are compared with ``reference``.
"""

import itertools

import pytest

from reference import (BRANCHES, EDGE_VALUES, IMMEDIATE_OPS, REGISTER_OPS, s64, u64)

CHUNK = 496  # results per program, at gp-2048 onwards
SCRATCH = 1984  # gp offset of 64 scratch bytes after the results


def run_cases(asm_program, cases, traps_expected=False):
    """cases: list of (asm computing a2, expected). Asserts each result."""
    for start in range(0, len(cases), CHUNK):
        chunk = cases[start:start + CHUNK]
        body = "\n".join(f"{code}\n    sd a2, {8 * i - 2048}(gp)" for i, (code, _) in enumerate(chunk))
        machine = asm_program(body)
        result = machine.run(max_instructions=1_000_000)
        assert result.status == 0
        assert traps_expected or machine.harts[0].x(25) == u64(-1), "unexpected trap"
        data = machine.harts[0].x(3) - 2048
        for i, (code, expected) in enumerate(chunk):
            got = machine.ram.read_u64(data + 8 * i)
            assert got == u64(expected), f"{code.strip()}: got {got:#x}, expected {u64(expected):#x}"


@pytest.mark.parametrize("name", sorted(REGISTER_OPS))
def test_register_register(asm_program, name):
    model = REGISTER_OPS[name]
    cases = [(f"    li a0, {a}\n    li a1, {b}\n    {name} a2, a0, a1", model(a, b))
             for a, b in itertools.product(EDGE_VALUES, repeat=2)]
    run_cases(asm_program, cases)


IMMEDIATES = [0, 1, -1, 5, 2047, -2048, 0x555, -0x556]
SHIFTS = [0, 1, 5, 31, 32, 33, 62, 63]


@pytest.mark.parametrize("name", sorted(IMMEDIATE_OPS))
def test_register_immediate(asm_program, name):
    model = IMMEDIATE_OPS[name]
    if name.startswith("s") and name[1] in "lr":
        imms = [i for i in SHIFTS if not name.endswith("w") or i < 32]
    else:
        imms = IMMEDIATES
    cases = [(f"    li a0, {a}\n    {name} a2, a0, {i}", model(a, i))
             for a in EDGE_VALUES for i in imms]
    run_cases(asm_program, cases)


def test_write_to_x0_is_discarded(asm_program):
    run_cases(asm_program, [("    li a0, 5\n    addi x0, a0, 1\n    mv a2, x0", 0),
                            ("    lui x0, 0x12345\n    add a2, x0, x0", 0)])


@pytest.mark.parametrize("name", sorted(BRANCHES))
def test_branches(asm_program, name):
    model = BRANCHES[name]
    cases = [(f"    li a0, {a}\n    li a1, {b}\n    li a2, 1\n    {name} a0, a1, 1f\n"
              f"    li a2, 0\n1:", int(model(a, b)))
             for a, b in itertools.product(EDGE_VALUES, repeat=2)]
    run_cases(asm_program, cases)


def test_lui_auipc_jal_jalr(asm_program):
    cases = [
        ("    lui a2, 0x80000", s64(0xFFFFFFFF80000000)),
        ("    lui a2, 0x7ffff", 0x7FFFF000),
        ("    lui a2, 0x12345\n    addi a2, a2, 0x678", 0x12345678),
        ("1:  auipc a2, 0x1\n    la a3, 1b\n    sub a2, a2, a3", 0x1000),
        ("1:  auipc a2, 0xfffff\n    la a3, 1b\n    sub a2, a2, a3", -0x1000),
        # jal links to the next instruction and lands on its target
        ("    jal a3, 1f\n2:  j 3f\n1:  la a4, 2b\n    sub a2, a3, a4\n3:", 0),
        # jalr adds the immediate and clears bit 0 of the target
        ("    la a3, 1f\n    addi a3, a3, -3\n    li a2, 7\n    jalr a4, 4(a3)\n"
         "    li a2, 9\n1:  nop", 7),
        ("    la a3, 1f\n    jalr a4, 0(a3)\n2:  nop\n1:  la a5, 2b\n    sub a2, a4, a5", 0),
        # rd == rs1: the target uses the old value
        ("    la ra, 1f\n    jalr ra, 0(ra)\n2:  nop\n1:  la a5, 2b\n    sub a2, ra, a5", 0),
    ]
    run_cases(asm_program, cases)


LOAD_PATTERN = 0x8899AABBCCDDEEFF


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 4, 5, 6, 7])
def test_loads_sign_and_zero_extension(asm_program, offset):
    memory = LOAD_PATTERN.to_bytes(8, "little") + (0xF0E1D2C3B4A59687).to_bytes(8, "little")
    cases = []
    for name, size, signed in (("lb", 1, True), ("lbu", 1, False), ("lh", 2, True),
                               ("lhu", 2, False), ("lw", 4, True), ("lwu", 4, False),
                               ("ld", 8, True)):
        value = int.from_bytes(memory[offset:offset + size], "little", signed=signed)
        cases.append((f"    {name} a2, {SCRATCH + offset}(gp)", value))
    setup = (f"    li a0, {s64(LOAD_PATTERN)}\n    sd a0, {SCRATCH}(gp)\n"
             f"    li a0, {s64(0xF0E1D2C3B4A59687)}\n    sd a0, {SCRATCH + 8}(gp)\n")
    cases[0] = (setup + cases[0][0], cases[0][1])
    run_cases(asm_program, cases)


@pytest.mark.parametrize("offset", [0, 1, 3, 6])
def test_stores_write_only_their_bytes(asm_program, offset):
    cases = []
    for name, size in (("sb", 1), ("sh", 2), ("sw", 4), ("sd", 8)):
        expected = bytearray(b"\xAA" * 16)
        expected[offset:offset + size] = (0x1122334455667788).to_bytes(8, "little")[:size]
        code = (f"    li a0, -0x5555555555555556\n    sd a0, {SCRATCH}(gp)\n"
                f"    sd a0, {SCRATCH + 8}(gp)\n    li a1, 0x1122334455667788\n"
                f"    {name} a1, {SCRATCH + offset}(gp)\n    ld a2, {SCRATCH}(gp)")
        cases.append((code, int.from_bytes(expected[:8], "little")))
        code2 = code.rsplit("\n", 1)[0] + f"\n    ld a2, {SCRATCH + 8}(gp)"
        cases.append((code2, int.from_bytes(expected[8:], "little")))
    run_cases(asm_program, cases)
