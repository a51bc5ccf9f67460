"""The host-FPU fast path (``hostfloat``) against the exact model (``softfloat``).

Wherever ``hostfloat`` says it has an answer, its bits and flags must be
softfloat's, for every operation of F and D. Operands are random patterns
weighted towards the cases where the error-free transformations are
delicate: cancellation in fmadd (the addend close to minus the product),
exact quotients and square roots, magnitudes near the underflow and
overflow thresholds, and short significands (exact results). Other tests
(test_fpu.py) check the instructions themselves against a rational
reference; this one covers millions of operand sets in compiled code.
"""

import numpy as np
import pytest
from numba import njit

from hartvm.cpu import hostfloat as hf
from hartvm.cpu import softfloat as sf

FORMATS = {"d": (True, 11, 52), "s": (False, 8, 23)}
COUNT = 400_000
OPERATIONS = ("add", "sub", "mul", "div", "sqrt", "fmadd", "fmsub", "fnmsub", "fnmadd")


@njit
def compare(operation, a, b, c, double, mismatch):
    """How many operand sets took the fast path; the first that disagrees goes to ``mismatch``."""
    E, M = (11, 52) if double else (8, 23)
    fast = 0
    for i in range(a.size):
        if operation <= 4:
            bits, flags, done = hf.arithmetic(operation, a[i], b[i], sf.RNE, double)
            if not done:
                continue
            if operation <= 1:
                exact, exact_flags = sf.add(a[i], b[i], sf.RNE, E, M, operation == 1)
            elif operation == 2:
                exact, exact_flags = sf.mul(a[i], b[i], sf.RNE, E, M)
            elif operation == 3:
                exact, exact_flags = sf.div(a[i], b[i], sf.RNE, E, M)
            else:
                exact, exact_flags = sf.sqrt(a[i], sf.RNE, E, M)
        else:
            kind = operation - 5
            bits, flags, done = hf.fused(a[i], b[i], c[i], sf.RNE, double, kind >= 2,
                                         kind == 1 or kind == 3)
            if not done:
                continue
            exact, exact_flags = sf.fma(a[i], b[i], c[i], sf.RNE, E, M, kind >= 2,
                                        kind == 1 or kind == 3)
        fast += 1
        if bits != exact or flags != exact_flags:
            mismatch[0] = i
            mismatch[1] = exact
            mismatch[2] = exact_flags
            mismatch[3] = bits
            mismatch[4] = flags
            return fast
    return fast


def patterns(rng, count, E, M, near_one=0.8):
    """Random bit patterns: mostly exponents near 1.0, the rest anywhere (subnormals,
    infinities and NaNs included); 40 % with the low half of the fraction clear."""
    bias = (1 << (E - 1)) - 1
    sign = rng.integers(0, 2, count)
    exponent = np.where(rng.random(count) < near_one, bias + rng.integers(-8, 8, count),
                        rng.integers(0, 1 << E, count))
    fraction = rng.integers(0, 1 << M, count, dtype=np.int64)
    fraction = np.where(rng.random(count) < 0.4, fraction & ~((1 << (M // 2)) - 1), fraction)
    return (sign << (E + M)) | (exponent << M) | fraction


def as_host(bits, double):
    return bits.view(np.float64) if double else bits.astype(np.uint32).view(np.float32)


def as_bits(values, double):
    return values.view(np.int64) if double else values.view(np.uint32).astype(np.int64)


def operand_sets(fmt, operation, rng):
    double, E, M = FORMATS[fmt]
    a, b, c = (patterns(rng, COUNT, E, M) for _ in range(3))
    host_a, host_b = as_host(a, double), as_host(b, double)
    with np.errstate(all="ignore"):
        if operation.startswith(("fm", "fnm")):
            # the addend within two units of -(a*b) rounded, for one case in two
            product = as_bits(-(host_a * host_b), double) + rng.integers(-2, 3, COUNT)
            c = np.where(rng.random(COUNT) < 0.5, product & (-1 if double else 0xFFFFFFFF), c)
        elif operation == "div":
            # a = q * b rounded: exact quotients for short q, near-exact otherwise
            q = as_host(patterns(rng, COUNT, E, M), double)
            a = np.where(rng.random(COUNT) < 0.5, as_bits(q * host_b, double), a)
        elif operation == "sqrt":
            root = as_host(patterns(rng, COUNT, E, M), double)
            a = np.where(rng.random(COUNT) < 0.5, as_bits(root * root, double), a)
    # magnitudes near the underflow threshold, for one set in eight
    tiny = rng.random(COUNT) < 0.125
    a = np.where(tiny, (a & ~(((1 << E) - 1) << M)) | (rng.integers(1, 2 * M + 8, COUNT) << M), a)
    return a, b, c


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_fast_path_agrees_with_softfloat(fmt, operation):
    rng = np.random.default_rng(OPERATIONS.index(operation) * 2 + (fmt == "s"))
    a, b, c = operand_sets(fmt, operation, rng)
    mismatch = np.full(5, -1, dtype=np.int64)
    fast = compare(OPERATIONS.index(operation), a, b, c, FORMATS[fmt][0], mismatch)
    i = mismatch[0]
    assert i < 0, (f"{operation}.{fmt} of {a[i]:#x}, {b[i]:#x}, {c[i]:#x}: softfloat gives "
                   f"{mismatch[1]:#x} flags {mismatch[2]}, hostfloat {mismatch[3]:#x} flags {mismatch[4]}")
    # The fast path must actually be taken for ordinary operands: most of them here.
    assert fast > COUNT // 2


@pytest.mark.parametrize("double", (True, False))
def test_only_round_to_nearest_even_is_fast(double):
    E, M = FORMATS["d" if double else "s"][1:]
    one = ((1 << (E - 1)) - 1) << M
    third = one | (1 << (M - 1)) | 1        # 1.5 and a bit: sums are inexact
    for rm in (sf.RTZ, sf.RDN, sf.RUP, sf.RMM):
        assert not _arithmetic(0, third, third, rm, double)[2]
        assert not _fused(third, third, third, rm, double)[2]
    assert _arithmetic(0, third, third, sf.RNE, double)[2]


@njit
def _arithmetic(operation, a, b, rm, double):
    return hf.arithmetic(operation, a, b, rm, double)


@njit
def _fused(a, b, c, rm, double):
    return hf.fused(a, b, c, rm, double, False, False)
