"""F and D: every arithmetic, conversion and compare instruction against ``fpref``.

Each test assembles a program that runs one instruction over many operand
sets (special values, boundaries, random patterns) with an explicit
rounding mode, storing the result and the accrued flags (``fflags``, read
and cleared after each instruction). Expected results come from the
rational-arithmetic reference in ``fpref``.
"""

import random
import struct

import numpy as np
import pytest

import fpref
from fpref import FORMATS

MODES = {"rne": 0, "rtz": 1, "rdn": 2, "rup": 3, "rmm": 4}
MASK64 = 2**64 - 1


def special_values(E, M):
    bias = (1 << (E - 1)) - 1
    inf = ((1 << E) - 1) << M
    values = [0, 1, (1 << M) - 1, 1 << M, inf - 1, inf, inf | 1, inf | (1 << (M - 1)),
              bias << M, (bias << M) | 1, (bias + 1) << M, ((bias - 1) << M) | ((1 << M) - 1),
              (bias << M) | (1 << (M - 1)), ((bias + M) << M) | 1, ((bias + M + 1) << M) | 3]
    return values + [v | (1 << (E + M)) for v in values]


def random_values(E, M, count, rng):
    values = []
    bias = (1 << (E - 1)) - 1
    for _ in range(count):
        kind = rng.random()
        sign = rng.getrandbits(1) << (E + M)
        if kind < 0.5:     # ordinary magnitudes near 1
            exp = bias + rng.randint(-20, 20)
        elif kind < 0.8:   # anywhere, including subnormal and huge
            exp = rng.randint(0, (1 << E) - 2)
        else:              # near the ends of the range
            exp = rng.choice([0, 1, 2, (1 << E) - 3, (1 << E) - 2])
        values.append(sign | (exp << M) | rng.getrandbits(M))
    return values


def operand_sets(fmt, arity, count=120, seed=0):
    E, M = FORMATS[fmt]
    rng = random.Random(f"{fmt}{arity}{seed}")
    specials = special_values(E, M)
    sets = []
    for _ in range(count):
        pool = specials if rng.random() < 0.4 else random_values(E, M, 3, rng)
        sets.append(tuple(rng.choice(pool) for _ in range(arity)))
    # cancellation and nearby exponents for add/sub/fma
    for _ in range(count // 2):
        a = random_values(E, M, 1, rng)[0]
        b = (a ^ (1 << (E + M))) + rng.randint(-3, 3)
        c = random_values(E, M, 1, rng)[0]
        sets.append((a, b & ((1 << (E + M + 1)) - 1), c)[:arity])
    return sets


def run_fp_program(asm_program, fmt, cases, instruction, int_source=False, int_result=False):
    """cases: operand tuples (bit patterns); returns [(result, fflags)]."""
    double = fmt == "d"
    load = "fld" if double else "flw"
    words = ", ".join(str(v) for case in cases for v in (list(case) + [0, 0, 0])[:3])
    code = [".pushsection .data", ".align 3", f"operands: .dword {words}",
            f"results: .space {16 * len(cases)}", ".popsection",
            "    la s2, operands", "    la s3, results", "    csrwi fflags, 0"]
    for _ in cases:
        if int_source:
            code.append("    ld a0, 0(s2)")
        else:
            code += [f"    {load} fa0, 0(s2)", f"    {load} fa1, 8(s2)", f"    {load} fa2, 16(s2)"]
        code.append("    " + instruction)
        code.append("    sd a3, 0(s3)" if int_result else "    fsd fa3, 0(s3)")
        code += ["    csrrw t0, fflags, zero", "    sd t0, 8(s3)",
                 "    addi s2, s2, 24", "    addi s3, s3, 16"]
    machine = asm_program("\n".join(code))
    machine.harts[0].state[4096 + 0x300] |= 1 << 13   # mstatus.FS = Initial
    machine.run(max_instructions=1_000_000)
    hart = machine.harts[0]
    assert hart.x(25) == MASK64, f"unexpected trap, mcause {hart.x(25)}"
    start = hart.x(19) - 16 * len(cases)
    results = []
    for i in range(len(cases)):
        value = machine.ram.read_u64(start + 16 * i)
        if not double and not int_result:
            assert value >> 32 == 0xFFFFFFFF, "single result not NaN-boxed"
            value &= 0xFFFFFFFF
        results.append((value, machine.ram.read_u64(start + 16 * i + 8)))
    return results


def check(asm_program, fmt, cases, instruction, reference, **kw):
    got = run_fp_program(asm_program, fmt, cases, instruction, **kw)
    wrong = [(case, g, want) for case, g, want in
             zip(cases, got, [reference(*c) for c in cases]) if g != (want[0] & MASK64, want[1])]
    assert not wrong, f"{instruction}: {len(wrong)} of {len(cases)} wrong, first " + \
        ", ".join(f"{[hex(v) for v in c]} -> {g[0]:#x}/{g[1]:#x} want {w[0] & MASK64:#x}/{w[1]:#x}"
                  for c, g, w in wrong[:3])


@pytest.mark.parametrize("fmt", ["s", "d"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("op", ["fadd", "fsub", "fmul", "fdiv"])
def test_arithmetic(asm_program, fmt, mode, op):
    E, M = FORMATS[fmt]
    rm = MODES[mode]
    model = {"fadd": lambda a, b: fpref.add(a, b, rm, E, M),
             "fsub": lambda a, b: fpref.add(a, b, rm, E, M, subtract=True),
             "fmul": lambda a, b: fpref.mul(a, b, rm, E, M),
             "fdiv": lambda a, b: fpref.div(a, b, rm, E, M)}[op]
    check(asm_program, fmt, operand_sets(fmt, 2), f"{op}.{fmt} fa3, fa0, fa1, {mode}", model)


@pytest.mark.parametrize("fmt", ["s", "d"])
@pytest.mark.parametrize("mode", list(MODES))
def test_sqrt(asm_program, fmt, mode):
    E, M = FORMATS[fmt]
    check(asm_program, fmt, operand_sets(fmt, 1), f"fsqrt.{fmt} fa3, fa0, {mode}",
          lambda a: fpref.sqrt(a, MODES[mode], E, M))


@pytest.mark.parametrize("fmt", ["s", "d"])
@pytest.mark.parametrize("mode", ["rne", "rtz", "rdn", "rup", "rmm"])
@pytest.mark.parametrize("op, negate_product, negate_addend",
                         [("fmadd", False, False), ("fmsub", False, True),
                          ("fnmsub", True, False), ("fnmadd", True, True)])
def test_fused_multiply_add(asm_program, fmt, mode, op, negate_product, negate_addend):
    E, M = FORMATS[fmt]
    check(asm_program, fmt, operand_sets(fmt, 3), f"{op}.{fmt} fa3, fa0, fa1, fa2, {mode}",
          lambda a, b, c: fpref.fma(a, b, c, MODES[mode], E, M, negate_product, negate_addend))


@pytest.mark.parametrize("fmt", ["s", "d"])
def test_compare_min_max_classify(asm_program, fmt):
    E, M = FORMATS[fmt]
    cases = operand_sets(fmt, 2)
    for kind in ("eq", "lt", "le"):
        check(asm_program, fmt, cases, f"f{kind}.{fmt} a3, fa0, fa1",
              lambda a, b, kind=kind: fpref.compare(a, b, E, M, kind), int_result=True)
    check(asm_program, fmt, cases, f"fmin.{fmt} fa3, fa0, fa1",
          lambda a, b: fpref.min_max(a, b, E, M, False))
    check(asm_program, fmt, cases, f"fmax.{fmt} fa3, fa0, fa1",
          lambda a, b: fpref.min_max(a, b, E, M, True))
    # fclass bit numbers, ISA spec table 11.5: (positive, negative)
    expected_class = {"inf": (7, 0), "zero": (4, 3), "qnan": (9, 9), "snan": (8, 8)}

    def fclass(a, b):
        sign, kind, value = fpref.classify(a, E, M)
        if kind == "finite":
            subnormal = value < fpref.Fraction(2) ** (2 - (1 << (E - 1)))
            bit = (2 if subnormal else 1) if sign else (5 if subnormal else 6)
        else:
            bit = expected_class[kind][sign] if kind in ("inf", "zero") else expected_class[kind][0]
        return 1 << bit, 0
    check(asm_program, fmt, cases, f"fclass.{fmt} a3, fa0", fclass, int_result=True)


@pytest.mark.parametrize("fmt", ["s", "d"])
@pytest.mark.parametrize("mode", list(MODES))
def test_float_to_integer(asm_program, fmt, mode):
    E, M = FORMATS[fmt]
    rm = MODES[mode]
    rng = random.Random(fmt + mode)
    bias = (1 << (E - 1)) - 1
    cases = [(v,) for v in special_values(E, M)]
    cases += [(rng.getrandbits(1) << (E + M) | (bias + rng.randint(-3, 66)) << M
               | rng.getrandbits(M),) for _ in range(150)]
    for target, width, signed in (("w", 32, True), ("wu", 32, False), ("l", 64, True),
                                  ("lu", 64, False)):
        def model(a, width=width, signed=signed):
            value, flags = fpref.to_int(a, rm, E, M, width, signed)
            if width == 32:  # the 32-bit result is sign-extended into the register
                value = (value & 0xFFFFFFFF) - ((value & 0x80000000) << 1)
            return value, flags
        check(asm_program, fmt, cases, f"fcvt.{target}.{fmt} a3, fa0, {mode}", model,
              int_result=True)


@pytest.mark.parametrize("fmt", ["s", "d"])
@pytest.mark.parametrize("mode", list(MODES))
def test_integer_to_float(asm_program, fmt, mode):
    E, M = FORMATS[fmt]
    rm = MODES[mode]
    rng = random.Random(fmt + mode + "i")
    values = [0, 1, -1, 2**31 - 1, -2**31, 2**32 - 1, 2**63 - 1, -2**63, 2**53 + 1, 2**24 + 1,
              (2**64 - 1) & ~0xFF]
    values += [rng.getrandbits(rng.randint(1, 64)) for _ in range(150)]
    cases = [(v & MASK64,) for v in values]
    for source, width, signed in (("w", 32, True), ("wu", 32, False), ("l", 64, True),
                                  ("lu", 64, False)):
        def model(raw, width=width, signed=signed):
            value = raw & ((1 << width) - 1)
            if signed and value >> (width - 1):
                value -= 1 << width
            return fpref.from_int(value, rm, E, M)
        exact = fmt == "d" and width == 32   # the assembler takes no rounding mode then
        check(asm_program, fmt, cases, f"fcvt.{fmt}.{source} fa3, a0" + ("" if exact else f", {mode}"),
              model, int_source=True)


@pytest.mark.parametrize("mode", list(MODES))
def test_convert_between_formats(asm_program, mode):
    rm = MODES[mode]
    doubles = operand_sets("d", 1, seed=3)
    check(asm_program, "d", doubles, f"fcvt.s.d fa3, fa0, {mode}\n    fsgnj.d fa3, fa3, fa3",
          lambda a: _boxed(fpref.convert(a, rm, FORMATS["d"], FORMATS["s"])))
    singles = operand_sets("s", 1, seed=4)
    check(asm_program, "s", singles, "fcvt.d.s fa4, fa0\n    fcvt.s.d fa3, fa4, rne",
          _single_round_trip)


def _single_round_trip(a):
    """fcvt.d.s is exact, so converting back gives the single again (NaNs canonical)."""
    double, flags_there = fpref.convert(a, 0, FORMATS["s"], FORMATS["d"])
    single, flags_back = fpref.convert(double, 0, FORMATS["d"], FORMATS["s"])
    return single, flags_there | flags_back


def _boxed(result):
    bits, flags = result
    return bits | 0xFFFFFFFF00000000, flags


def test_nan_boxing_and_moves(asm_program):
    machine = asm_program("""
    li t0, 0x2000
    csrs mstatus, t0
    li a0, 0x3f800000          /* 1.0f */
    fmv.w.x fa0, a0
    fmv.x.d a1, fa0            /* the register holds 0xffffffff3f800000 */
    li a2, 0x3f800000
    fmv.d.x fa1, a2            /* a single without its box ... */
    fadd.s fa2, fa1, fa1       /* ... reads as the canonical NaN */
    fmv.x.w a3, fa2
    li a4, 0xbf800000
    fmv.w.x fa3, a4
    fmv.x.w a5, fa3            /* fmv.x.w sign-extends */
    csrr a6, mstatus
    """)
    machine.run(max_instructions=10_000)
    hart = machine.harts[0]
    assert hart.x(11) == 0xFFFFFFFF3F800000
    assert hart.x(13) == 0x7FC00000
    assert hart.x(15) == 0xFFFFFFFFBF800000
    assert hart.x(16) >> 63 == 1 and (hart.x(16) >> 13) & 3 == 3   # FS Dirty, SD set


def test_fp_instructions_are_illegal_with_fs_off(asm_program):
    machine = asm_program("""
    li t0, 0x6000
    csrc mstatus, t0
    fadd.d fa0, fa1, fa2
    """)
    machine.run(max_instructions=10_000)
    hart = machine.harts[0]
    assert hart.x(25) == 2 and hart.x(27) == 0x02C5F553   # mtval: fadd.d fa0, fa1, fa2


def test_dynamic_rounding_mode_and_reserved_modes(asm_program):
    one_third = struct.unpack("<Q", struct.pack("<d", 1 / 3))[0]
    machine = asm_program(f"""
    li t0, 0x2000
    csrs mstatus, t0
    li a0, 1
    fcvt.d.l fa0, a0
    li a0, 3
    fcvt.d.l fa1, a0
    fsrmi 3                    /* frm = RUP */
    fdiv.d fa2, fa0, fa1       /* dyn: rounds up */
    fmv.x.d a2, fa2
    fsrmi 1                    /* RTZ */
    fdiv.d fa3, fa0, fa1
    fmv.x.d a3, fa3
    frflags a4                 /* NX accrued */
    fsrmi 5                    /* a reserved frm: dynamic-rounding instructions are illegal */
    li s9, 0
    fdiv.d fa3, fa0, fa1
    mv a5, s9
    """)
    machine.run(max_instructions=10_000)
    hart = machine.harts[0]
    assert hart.x(12) == one_third + 1 and hart.x(13) == one_third
    assert hart.x(14) == 1
    assert hart.x(15) == 2


# --- overflow and infinities, exactly (IEEE 754-2019 7.4, RISC-V F 11.3 and 11.6) -----------

def _largest(fmt, sign=0):
    E, M = FORMATS[fmt]
    return sign << (E + M) | ((1 << E) - 2) << M | ((1 << M) - 1)


def _power_of_two(fmt, exponent, sign=0):
    E, M = FORMATS[fmt]
    return sign << (E + M) | (exponent + (1 << (E - 1)) - 1) << M


def _overflowed(fmt, sign, rm):
    """What an overflow gives (IEEE 754 7.4): the sign's infinity when rounding away
    from zero in that direction, the largest finite number of that sign otherwise."""
    E, M = FORMATS[fmt]
    to_infinity = rm in (fpref.RNE, fpref.RMM) or rm == (fpref.RDN if sign else fpref.RUP)
    return (fpref.infinity(sign, E, M) if to_infinity else _largest(fmt, sign)), fpref.OF | fpref.NX


def _overflow_cases(fmt, rm):
    """(instruction, operands, expected (bits, fflags)) worked out from the standard,
    not from fpref: overflow in each direction, the rounding edge just past the
    largest number, and exact operations on infinities."""
    E, M = FORMATS[fmt]
    emax = (1 << (E - 1)) - 1
    big, two, half, one = _largest(fmt), _power_of_two(fmt, 1), _power_of_two(fmt, -1), \
        _power_of_two(fmt, 0)
    neg = 1 << (E + M)
    half_ulp = _power_of_two(fmt, emax - M - 1)    # half the spacing below 2**(emax + 1)
    inf, nan, zero = fpref.infinity(0, E, M), fpref.canonical_nan(E, M), 0
    # the largest number plus half an ulp: a tie between it (odd) and 2**(emax + 1)
    tie_up = rm in (fpref.RNE, fpref.RMM, fpref.RUP)
    cases = [
        ("fadd", (big, big), _overflowed(fmt, 0, rm)),
        ("fadd", (big | neg, big | neg), _overflowed(fmt, 1, rm)),
        ("fsub", (big | neg, big), _overflowed(fmt, 1, rm)),
        ("fmul", (big, two), _overflowed(fmt, 0, rm)),
        ("fmul", (big | neg, big), _overflowed(fmt, 1, rm)),
        ("fdiv", (big, half), _overflowed(fmt, 0, rm)),
        ("fdiv", (big, half | neg), _overflowed(fmt, 1, rm)),
        ("fadd", (big, half_ulp), _overflowed(fmt, 0, rm) if tie_up else (big, fpref.NX)),
        ("fadd", (big | neg, half_ulp | neg),
         _overflowed(fmt, 1, rm) if rm in (fpref.RNE, fpref.RMM, fpref.RDN)
         else (big | neg, fpref.NX)),
        ("fadd", (big, big | neg), (zero | (neg if rm == fpref.RDN else 0), 0)),
        ("fmul", (big, one), (big, 0)),                       # the largest number is no overflow
        ("fadd", (inf, big), (inf, 0)),                       # infinities are exact
        ("fadd", (inf | neg, big), (inf | neg, 0)),
        ("fadd", (inf, inf | neg), (nan, fpref.NV)),
        ("fsub", (inf, inf), (nan, fpref.NV)),
        ("fmul", (inf, big | neg), (inf | neg, 0)),
        ("fmul", (inf, zero | neg), (nan, fpref.NV)),
        ("fdiv", (one, zero), (inf, fpref.DZ)),
        ("fdiv", (one | neg, zero), (inf | neg, fpref.DZ)),
        ("fdiv", (big, inf), (zero, 0)),
        ("fdiv", (inf, big | neg), (inf | neg, 0)),
        ("fdiv", (inf, inf), (nan, fpref.NV)),
        ("fdiv", (zero, zero), (nan, fpref.NV)),
        ("fsqrt", (inf,), (inf, 0)),
        ("fsqrt", (inf | neg,), (nan, fpref.NV)),
        # fused: the exact big * 2 - big is big, though big * 2 alone overflows
        ("fmadd", (big, two, big | neg), (big, 0)),
        ("fmadd", (big, one, big), _overflowed(fmt, 0, rm)),
        ("fnmadd", (big, one, big), _overflowed(fmt, 1, rm)),
        ("fmadd", (inf, zero, one), (nan, fpref.NV)),
        ("fmadd", (inf, one, inf | neg), (nan, fpref.NV)),
    ]
    return cases


def _fpref_model(op, rm, E, M):
    return {"fadd": lambda a, b: fpref.add(a, b, rm, E, M),
            "fsub": lambda a, b: fpref.add(a, b, rm, E, M, subtract=True),
            "fmul": lambda a, b: fpref.mul(a, b, rm, E, M),
            "fdiv": lambda a, b: fpref.div(a, b, rm, E, M),
            "fsqrt": lambda a: fpref.sqrt(a, rm, E, M),
            "fmadd": lambda a, b, c: fpref.fma(a, b, c, rm, E, M),
            "fnmadd": lambda a, b, c: fpref.fma(a, b, c, rm, E, M, True, True)}[op]


@pytest.mark.parametrize("fmt", ["s", "d"])
@pytest.mark.parametrize("mode", list(MODES))
def test_overflow_and_infinities_exactly(asm_program, fmt, mode):
    """Results and flags exactly as the standard says: no infinity or largest-number
    result is accepted for another, and OF always comes with NX."""
    E, M = FORMATS[fmt]
    rm = MODES[mode]
    cases = _overflow_cases(fmt, rm)
    for op, operands, want in cases:                   # the reference agrees too
        assert _fpref_model(op, rm, E, M)(*operands) == want, (op, [hex(v) for v in operands])
    for op in sorted({op for op, _, _ in cases}):
        mine = [(operands, want) for o, operands, want in cases if o == op]
        registers = {1: "fa0", 2: "fa0, fa1", 3: "fa0, fa1, fa2"}[len(mine[0][0])]
        table = dict(mine)
        check(asm_program, fmt, [operands for operands, _ in mine],
              f"{op}.{fmt} fa3, {registers}, {mode}", lambda *operands: table[operands])


HOST_FLAGS = {1: fpref.DZ, 2: fpref.OF, 4: fpref.UF, 8: fpref.NV}   # numpy's error bits


def _host(operation, *operands):
    """The host FPU's double result (round to nearest, even) and its flags but NX,
    which numpy reads from the FPU's status after the operation."""
    flags = 0

    def record(kind, bits):
        nonlocal flags
        flags |= sum(flag for bit, flag in HOST_FLAGS.items() if bits & bit)
    values = np.frombuffer(struct.pack(f"<{len(operands)}Q", *operands), np.float64)
    previous = np.seterrcall(record)
    try:
        with np.errstate(all="call"):
            result = operation(*values)
    finally:
        np.seterrcall(previous)
    return struct.unpack("<Q", np.float64(result).tobytes())[0], flags


def test_reference_agrees_with_host_doubles():
    """The reference itself, in round-to-nearest, against the host's IEEE doubles:
    overflow, infinities and NaNs included. A NaN result must be RISC-V's canonical
    NaN (11.3); the flags the host reports (NV, DZ, OF, UF) must be the reference's
    flags but NX, and an overflow or underflow is always inexact too."""
    E, M = FORMATS["d"]
    big, tiny = _largest("d"), 1                       # the largest, the smallest subnormal
    inf, neg = fpref.infinity(0, E, M), 1 << 63
    signalling = inf | 1
    edges = [(big, big), (big | neg, big | neg), (big, _power_of_two("d", 970)),
             (big, _power_of_two("d", 969)), (big, _power_of_two("d", 1)),
             (_power_of_two("d", 600), _power_of_two("d", 600)), (big, _power_of_two("d", -1)),
             (tiny, _power_of_two("d", -1)), (_power_of_two("d", -1022), _power_of_two("d", -1)),
             (inf, big), (inf, inf | neg), (inf, 0), (0, 0), (_power_of_two("d", 0), 0),
             (big, inf), (inf, inf), (signalling, _power_of_two("d", 0)),
             (fpref.canonical_nan(E, M), 0)]
    operations = [
        ("add", lambda x, y: x + y, lambda a, b: fpref.add(a, b, 0, E, M)),
        ("sub", lambda x, y: x - y, lambda a, b: fpref.add(a, b, 0, E, M, subtract=True)),
        ("mul", lambda x, y: x * y, lambda a, b: fpref.mul(a, b, 0, E, M)),
        ("div", lambda x, y: x / y, lambda a, b: fpref.div(a, b, 0, E, M)),
        ("sqrt", lambda x, y: np.sqrt(x), lambda a, b: fpref.sqrt(a, 0, E, M)),
    ]
    seen = 0
    for a, b in operand_sets("d", 2, count=400, seed=9) + edges:
        for name, host_operation, reference in operations:
            want, host_flags = _host(host_operation, a, b)
            got, flags = reference(a, b)
            where = f"{name} {a:#x} {b:#x}: {got:#x}/{flags:#x}, host {want:#x}/{host_flags:#x}"
            if fpref.classify(want, E, M)[1] in ("qnan", "snan"):
                assert got == fpref.canonical_nan(E, M), where
            else:
                assert got == want, where
            assert flags & ~fpref.NX == host_flags, where
            if flags & (fpref.OF | fpref.UF):
                assert flags & fpref.NX, where
            seen |= host_flags
    assert seen == fpref.NV | fpref.DZ | fpref.OF | fpref.UF   # every flag was exercised
