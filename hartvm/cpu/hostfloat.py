"""The host FPU's fast path for F and D arithmetic, taken only where it is provably exact.

``softfloat`` gives every rounding mode and every flag exactly, at the cost
of integer arithmetic for each operation. Most FP code runs in
round-to-nearest-even (the host FPU's own mode) on normal numbers, and there
the host's result is the correctly rounded one by IEEE 754 itself. What the
host does not give is the accrued flags; they follow here from error-free
transformations, each exact when nothing underflows:

- add/sub: TwoSum (Knuth): ``s = a + b`` and ``err`` with ``a + b = s + err``;
- mul: the product's error ``fma(a, b, -p)``;
- div: the remainder ``fma(-q, b, a)`` is exactly ``a - q*b``;
- sqrt: the remainder ``fma(-r, r, a)`` is exactly ``a - r*r``;
- fmadd & co.: ErrFma (Boldo and Muller, "Exact and approximated error of
  the FMA", IEEE Trans. Computers 60(2), 2011): ``a*b + c = r1 + r2 + r3``
  exactly with ``|r3| <= ulp(r2)/2``, so the result is exact iff r2 == 0.

A result is inexact iff that error is nonzero (NX). Overflow, underflow
(tininess is after rounding in RISC-V; a normal result is never tiny), NaNs,
infinities, subnormals and operands so small that an error term could
underflow all go to ``softfloat``: this module answers only where it is sure,
and says so with its third result.

Singles are computed in double and rounded once to single. For +, -, *, /
and sqrt of singles that double rounding is innocuous (Figueroa, "When is
double rounding innocuous?", 1995: 53 >= 2*24 + 2); the product of two
singles is exact in double. For fmadd.s the double sum's own error tells
whether the second rounding could be wrong (only at a single's midpoint).

The host must not flush subnormals or be in another rounding mode: numba
leaves the x86 MXCSR and LLVM's default FP environment (round to nearest,
no flush) alone, and compiles without fast-math, so every operation below is
the IEEE one in the order written.
"""

import math

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .jit import jit_inline
from .softfloat import FLAG_NX, RNE

DOUBLE_EXP = 0x7FF
SINGLE_EXP = 0xFF
# Below this magnitude an error term (product error, division or square-root
# remainder) could fall under the subnormal range and be rounded; 2**-960
# leaves 53 bits of margin plus a few over double's 2**-1022 normal minimum.
DOUBLE_TINY = 2.0 ** -960
# Above this the sums of ErrFma's terms could overflow where the result does not.
DOUBLE_HUGE = 2.0 ** 1000
DOUBLE_MIN_NORMAL = 2.0 ** -1022
DOUBLE_MAX = 1.7976931348623157e308
SINGLE_MIN_NORMAL = 2.0 ** -126
SINGLE_MAX = 3.4028234663852886e38
MIDPOINT_BITS = 29              # double fraction bits below a single's last bit


# --- bit patterns <-> host floats (LLVM bitcasts: no memory, no allocation) ---------
@intrinsic
def as_double(typingctx, bits):
    """The double whose IEEE bit pattern is the int64 ``bits``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def double_bits(typingctx, value):
    """The IEEE bit pattern of a double, as an int64."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def single_as_double(typingctx, bits):
    """The single whose bit pattern is the low 32 bits of ``bits``, widened (exactly) to double."""
    def codegen(context, builder, signature, args):
        single = builder.bitcast(builder.trunc(args[0], ir.IntType(32)), ir.FloatType())
        return builder.fpext(single, ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def single_bits(typingctx, value):
    """A double rounded to single (round to nearest even), as its 32-bit pattern in an int64."""
    def codegen(context, builder, signature, args):
        single = builder.fptrunc(args[0], ir.FloatType())
        return builder.zext(builder.bitcast(single, ir.IntType(32)), ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a*b + c with one rounding (LLVM's llvm.fma: the host's FMA instruction or libm's fma)."""
    def codegen(context, builder, signature, args):
        double = ir.DoubleType()
        function = builder.module.declare_intrinsic(
            "llvm.fma", [double], ir.FunctionType(double, [double, double, double]))
        return builder.call(function, args)
    return types.float64(types.float64, types.float64, types.float64), codegen


# --- operands --------------------------------------------------------------------
@jit_inline
def operand(bits, double):
    """(value, usable): the operand as a host double, and whether it is zero or normal."""
    if double:
        exp = (bits >> 52) & DOUBLE_EXP
        usable = exp != DOUBLE_EXP and (exp != 0 or bits & ((1 << 52) - 1) == 0)
        return as_double(bits), usable
    exp = (bits >> 23) & SINGLE_EXP
    usable = exp != SINGLE_EXP and (exp != 0 or bits & ((1 << 23) - 1) == 0)
    return single_as_double(bits), usable


@jit_inline
def two_sum_error(a, b, s):
    """The exact error of ``s = fl(a + b)`` (Knuth's TwoSum: six operations, no branch)."""
    b_virtual = s - a
    a_virtual = s - b_virtual
    return (a - a_virtual) + (b - b_virtual)


@jit_inline
def result(value, error, double):
    """(bits, flags, True) for the exact value ``value + error`` rounded to the format,
    or (0, 0, False) when softfloat must decide (overflow, underflow, a midpoint)."""
    magnitude = abs(value)
    if double:
        if not (magnitude >= DOUBLE_MIN_NORMAL or value == 0.0) or magnitude > DOUBLE_MAX:
            return 0, 0, False
        if value == 0.0 and error != 0.0:
            return 0, 0, False              # a nonzero result below the subnormal range
        return double_bits(value), FLAG_NX if error != 0.0 else 0, True
    single = single_bits(value)
    rounded = single_as_double(single)
    magnitude = abs(rounded)
    if not (magnitude >= SINGLE_MIN_NORMAL or value == 0.0) or magnitude > SINGLE_MAX:
        return 0, 0, False                  # underflow (to zero too) or overflow
    if error != 0.0:
        if value == 0.0:
            return 0, 0, False
        # value is a rounded stand-in for value + error: rounding it again to
        # single is right unless it lies exactly halfway between two singles.
        tail = double_bits(value) & ((1 << MIDPOINT_BITS) - 1)
        if tail == 1 << (MIDPOINT_BITS - 1):
            return 0, 0, False
        return single, FLAG_NX, True
    return single, FLAG_NX if rounded != value else 0, True


# --- operations ------------------------------------------------------------------
@jit_inline
def arithmetic(operation, a_bits, b_bits, rm, double):
    """add (0), sub (1), mul (2), div (3), sqrt (4) of raw operands: (bits, flags, done)."""
    if rm != RNE:
        return 0, 0, False
    a, a_usable = operand(a_bits, double)
    b, b_usable = operand(b_bits, double)
    if not a_usable or (operation != 4 and not b_usable):
        return 0, 0, False
    if operation == 1:
        b = -b
    if operation <= 1:
        s = a + b
        return result(s, two_sum_error(a, b, s), double)
    if operation == 2:
        p = a * b
        if double and abs(p) < DOUBLE_TINY and a != 0.0 and b != 0.0:
            return 0, 0, False              # the error term could underflow (or p did)
        # a single product is exact in double; a double one's error is fma's
        return result(p, fma(a, b, -p) if double else 0.0, double)
    if operation == 3:
        if b == 0.0 or (double and a != 0.0 and abs(a) < DOUBLE_TINY):
            return 0, 0, False
        q = a / b
        if double:
            return result(q, fma(-q, b, a), double)
        single = single_as_double(single_bits(q))
        return result(q, a - single * b, double)    # single * b: exact in double
    if a < 0.0 or (double and a != 0.0 and abs(a) < DOUBLE_TINY):
        return 0, 0, False                  # sqrt of a negative: NV, from softfloat
    r = math.sqrt(a)
    if double:
        return result(r, fma(-r, r, a), double)
    single = single_as_double(single_bits(r))
    return result(r, a - single * single, double)


@jit_inline
def fused(a_bits, b_bits, c_bits, rm, double, negate_product, negate_addend):
    """(±a*b) ± c with one rounding: (bits, flags, done)."""
    if rm != RNE:
        return 0, 0, False
    a, a_usable = operand(a_bits, double)
    b, b_usable = operand(b_bits, double)
    c, c_usable = operand(c_bits, double)
    if not (a_usable and b_usable and c_usable):
        return 0, 0, False
    if negate_product:
        a = -a
    if negate_addend:
        c = -c
    if not double:
        p = a * b                           # exact: 24 + 24 bits
        s = p + c
        return result(s, two_sum_error(p, c, s), double)
    u1 = a * b
    if abs(u1) < DOUBLE_TINY and a != 0.0 and b != 0.0:
        return 0, 0, False
    if (c != 0.0 and abs(c) < DOUBLE_TINY) or abs(u1) > DOUBLE_HUGE or abs(c) > DOUBLE_HUGE:
        return 0, 0, False
    r1 = fma(a, b, c)
    # ErrFma (module docstring): a*b + c == r1 + r2 + r3 exactly
    u2 = fma(a, b, -u1)
    alpha1 = c + u2
    alpha2 = two_sum_error(c, u2, alpha1)
    beta1 = u1 + alpha1
    beta2 = two_sum_error(u1, alpha1, beta1)
    gamma = (beta1 - r1) + beta2
    r2 = gamma + alpha2
    return result(r1, r2, double)
