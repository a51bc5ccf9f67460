"""An independent reference for IEEE 754 binary32/binary64 with exact rationals.

Values are decoded to ``fractions.Fraction``, the exact result of an
operation is computed in rationals (or, for sqrt, with integer square
roots), and rounded to the format by ``encode`` under any of the five
RISC-V rounding modes, giving the bits and the exception flags (ISA spec
chapter 11: tininess after rounding, canonical NaN results).
"""

import math
from fractions import Fraction

NX, UF, OF, DZ, NV = 1, 2, 4, 8, 16
RNE, RTZ, RDN, RUP, RMM = range(5)
FORMATS = {"s": (8, 23), "d": (11, 52)}


def canonical_nan(E, M):
    return (((1 << E) - 1) << M) | (1 << (M - 1))


def infinity(sign, E, M):
    return (sign << (E + M)) | (((1 << E) - 1) << M)


def classify(bits, E, M):
    sign = bits >> (E + M) & 1
    exp = bits >> M & ((1 << E) - 1)
    frac = bits & ((1 << M) - 1)
    if exp == (1 << E) - 1:
        if frac == 0:
            return sign, "inf", None
        return sign, "snan" if not frac >> (M - 1) else "qnan", None
    bias = (1 << (E - 1)) - 1
    if exp == 0:
        return sign, "zero" if frac == 0 else "finite", Fraction(frac) * Fraction(2) ** (1 - bias - M)
    return sign, "finite", Fraction(frac | (1 << M)) * Fraction(2) ** (exp - bias - M)


def _round_integer(sign, value, rm):
    """value (a non-negative Fraction) rounded to an integer: (integer, inexact)."""
    whole = value.numerator // value.denominator
    rest = value - whole
    if rest == 0:
        return whole, False
    half = Fraction(1, 2)
    if rm == RNE:
        up = rest > half or (rest == half and whole % 2 == 1)
    elif rm == RMM:
        up = rest >= half
    elif rm == RDN:
        up = sign == 1
    elif rm == RUP:
        up = sign == 0
    else:
        up = False
    return whole + (1 if up else 0), True


def _floor_log2(value):
    k = value.numerator.bit_length() - value.denominator.bit_length()
    if Fraction(2) ** k > value:
        k -= 1
    if Fraction(2) ** (k + 1) <= value:
        k += 1
    return k


def encode(sign, magnitude, rm, E, M):
    """Round (-1)**sign * magnitude (a Fraction >= 0) to the format: (bits, flags)."""
    if magnitude == 0:
        return sign << (E + M), 0
    bias = (1 << (E - 1)) - 1
    k = _floor_log2(magnitude)
    quantum = max(k - M, 1 - bias - M)
    kept, inexact = _round_integer(sign, magnitude / Fraction(2) ** quantum, rm)
    if kept == 1 << (M + 1):
        kept //= 2
        quantum += 1
    flags = NX if inexact else 0
    if inexact and k < 1 - bias:
        unbounded, _ = _round_integer(sign, magnitude / Fraction(2) ** (k - M), rm)
        k_after = k + 1 if unbounded == 1 << (M + 1) else k
        if k_after < 1 - bias:
            flags |= UF
    biased = quantum + M + bias if kept >= 1 << M else 0
    if biased >= (1 << E) - 1:
        flags = OF | NX
        if rm == RTZ or (rm == RDN and sign == 0) or (rm == RUP and sign == 1):
            return (sign << (E + M)) | (((1 << E) - 2) << M) | ((1 << M) - 1), flags
        return infinity(sign, E, M), flags
    return (sign << (E + M)) | (biased << M) | (kept & ((1 << M) - 1)), flags


def _signed_value(sign, value):
    return -value if sign else value


def _from_exact(value, rm, E, M, zero_sign):
    if value == 0:
        return zero_sign << (E + M), 0
    return encode(1 if value < 0 else 0, abs(value), rm, E, M)


def _nan_check(E, M, *operands):
    kinds = [classify(x, E, M)[1] for x in operands]
    if "snan" in kinds or "qnan" in kinds:
        return canonical_nan(E, M), NV if "snan" in kinds else 0
    return None


def add(a, b, rm, E, M, subtract=False):
    nan = _nan_check(E, M, a, b)
    if nan:
        return nan
    sa, ka, va = classify(a, E, M)
    sb, kb, vb = classify(b, E, M)
    sb ^= subtract
    if ka == "inf" or kb == "inf":
        if ka == kb == "inf" and sa != sb:
            return canonical_nan(E, M), NV
        s = sa if ka == "inf" else sb
        return infinity(s, E, M), 0
    exact = _signed_value(sa, va or 0) + _signed_value(sb, vb or 0)
    if exact == 0:
        if ka == kb == "zero" and sa == sb:
            zero_sign = sa
        else:
            zero_sign = 1 if rm == RDN else 0
        return zero_sign << (E + M), 0
    return _from_exact(exact, rm, E, M, 0)


def mul(a, b, rm, E, M):
    nan = _nan_check(E, M, a, b)
    if nan:
        return nan
    sa, ka, va = classify(a, E, M)
    sb, kb, vb = classify(b, E, M)
    sign = sa ^ sb
    if "inf" in (ka, kb):
        if "zero" in (ka, kb):
            return canonical_nan(E, M), NV
        return infinity(sign, E, M), 0
    if "zero" in (ka, kb):
        return sign << (E + M), 0
    return encode(sign, va * vb, rm, E, M)


def div(a, b, rm, E, M):
    nan = _nan_check(E, M, a, b)
    if nan:
        return nan
    sa, ka, va = classify(a, E, M)
    sb, kb, vb = classify(b, E, M)
    sign = sa ^ sb
    inf = infinity(sign, E, M)
    if ka == "inf":
        return (canonical_nan(E, M), NV) if kb == "inf" else (inf, 0)
    if kb == "inf":
        return sign << (E + M), 0
    if kb == "zero":
        return (canonical_nan(E, M), NV) if ka == "zero" else (inf, DZ)
    if ka == "zero":
        return sign << (E + M), 0
    return encode(sign, va / vb, rm, E, M)


def sqrt(a, rm, E, M):
    nan = _nan_check(E, M, a)
    if nan:
        return nan
    sign, kind, value = classify(a, E, M)
    if kind == "zero":
        return a, 0
    if sign:
        return canonical_nan(E, M), NV
    if kind == "inf":
        return a, 0
    # sqrt(value) = sqrt(value * 4**s) / 2**s with value * 4**s an integer plus
    # enough bits that the root has 2*M+8 significant bits; the remainder decides.
    s = M + 4 + max(0, value.denominator.bit_length())
    scaled = value * Fraction(4) ** s
    integer = scaled.numerator // scaled.denominator
    root = math.isqrt(integer)
    exact = root * root == integer and scaled.denominator == 1
    # root <= sqrt(scaled) < root + 1; represent as root + (1/4 if not exact): any value
    # strictly between keeps the rounding decision, as root has many extra bits.
    approx = Fraction(root) + (0 if exact else Fraction(1, 4))
    return encode(0, approx / Fraction(2) ** s, rm, E, M)


def fma(a, b, c, rm, E, M, negate_product=False, negate_addend=False):
    kinds = [classify(x, E, M)[1] for x in (a, b, c)]
    inf_times_zero = {kinds[0], kinds[1]} == {"inf", "zero"}
    if "snan" in kinds or "qnan" in kinds:
        invalid = "snan" in kinds or inf_times_zero
        return canonical_nan(E, M), NV if invalid else 0
    sa, ka, va = classify(a, E, M)
    sb, kb, vb = classify(b, E, M)
    sc, kc, vc = classify(c, E, M)
    sp = sa ^ sb ^ negate_product
    sc ^= negate_addend
    if inf_times_zero:
        return canonical_nan(E, M), NV
    if "inf" in (ka, kb):
        if kc == "inf" and sc != sp:
            return canonical_nan(E, M), NV
        return infinity(sp, E, M), 0
    if kc == "inf":
        return infinity(sc, E, M), 0
    product = _signed_value(sp, (va or 0) * (vb or 0))
    exact = product + _signed_value(sc, vc or 0)
    if exact == 0:
        product_zero = "zero" in (ka, kb)
        if product_zero and kc == "zero" and sp == sc:
            return sp << (E + M), 0
        return (1 if rm == RDN else 0) << (E + M), 0
    return _from_exact(exact, rm, E, M, 0)


def to_int(a, rm, E, M, width, signed):
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    sign, kind, value = classify(a, E, M)
    if kind in ("snan", "qnan"):
        return hi, NV
    if kind == "inf":
        return (lo if sign else hi), NV
    if kind == "zero":
        return 0, 0
    rounded, inexact = _round_integer(sign, value, rm)
    result = -rounded if sign else rounded
    if result < lo or result > hi:
        return (lo if sign else hi), NV
    return result, NX if inexact else 0


def from_int(value, rm, E, M):
    return _from_exact(Fraction(value), rm, E, M, 0)


def convert(a, rm, from_format, to_format):
    (fe, fm), (te, tm) = from_format, to_format
    sign, kind, value = classify(a, fe, fm)
    if kind in ("snan", "qnan"):
        return canonical_nan(te, tm), NV if kind == "snan" else 0
    if kind == "inf":
        return infinity(sign, te, tm), 0
    if kind == "zero":
        return sign << (te + tm), 0
    return encode(sign, value, rm, te, tm)


def compare(a, b, E, M, kind):
    """kind 'eq' (quiet), 'lt', 'le' (signalling): (0/1, flags)."""
    kinds = [classify(x, E, M)[1] for x in (a, b)]
    if any(k in ("snan", "qnan") for k in kinds):
        if kind == "eq":
            return 0, NV if "snan" in kinds else 0
        return 0, NV
    va, vb = (_ordered(x, E, M) for x in (a, b))
    return int({"eq": va == vb, "lt": va < vb, "le": va <= vb}[kind]), 0


def _ordered(bits, E, M):
    sign, kind, value = classify(bits, E, M)
    if kind == "inf":
        return float("-inf") if sign else float("inf")
    return _signed_value(sign, value or Fraction(0))


def min_max(a, b, E, M, want_max):
    kinds = [classify(x, E, M)[1] for x in (a, b)]
    flags = NV if "snan" in kinds else 0
    nan = [k in ("snan", "qnan") for k in kinds]
    if all(nan):
        return canonical_nan(E, M), flags
    if nan[0]:
        return b, flags
    if nan[1]:
        return a, flags
    va, vb = _ordered(a, E, M), _ordered(b, E, M)
    if va == vb:  # equal values: only the zeros differ, by sign
        negative = a if a >> (E + M) else b
        positive = b if negative is a else a
        return (positive if want_max else negative), flags
    return (max if want_max else min)((va, a), (vb, b))[1], flags
