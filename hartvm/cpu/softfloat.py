"""IEEE 754 binary32/binary64 arithmetic on bit patterns, exactly rounded, with flags.

The F and D extensions (ISA spec chapters 11-12) require all five rounding
modes and exact accrued exception flags, which host floating point does not
expose. So arithmetic is done here on integers, the way a hardware FPU does
it: operands are unpacked to (sign, significand, exponent), the exact result
(or one with a sticky bit standing for the discarded tail) is formed in
integer arithmetic, and ``round_pack`` rounds it once to the format.

A format is given by its exponent width ``E`` and fraction width ``M``
(8/23 for single, 11/52 for double). Every function returns
``(bits, flags)``; NaN results are the canonical NaN (ISA spec 11.3).
Tininess is detected after rounding, as RISC-V specifies.
"""

from .alu import ltu, mulhu, srl
from .jit import jit

FLAG_NX = 1   # inexact
FLAG_UF = 2   # underflow
FLAG_OF = 4   # overflow
FLAG_DZ = 8   # divide by zero
FLAG_NV = 16  # invalid operation

RNE = 0       # round to nearest, ties to even
RTZ = 1       # toward zero
RDN = 2       # down
RUP = 3       # up
RMM = 4       # to nearest, ties to max magnitude

F32_E, F32_M = 8, 23
F64_E, F64_M = 11, 52


# --- integer helpers ------------------------------------------------------------
@jit
def bitlen(x):
    """Number of significant bits of a non-negative int64 (0 for 0)."""
    n = 0
    if x >> 32:
        x >>= 32
        n += 32
    if x >> 16:
        x >>= 16
        n += 16
    if x >> 8:
        x >>= 8
        n += 8
    if x >> 4:
        x >>= 4
        n += 4
    if x >> 2:
        x >>= 2
        n += 2
    if x >> 1:
        x >>= 1
        n += 1
    return n + x


@jit
def bitlen128(hi, lo):
    """Significant bits of the unsigned 128-bit value hi:lo (halves as int64)."""
    if hi != 0:
        return 64 + (64 if hi < 0 else bitlen(hi))
    return 64 if lo < 0 else bitlen(lo)


@jit
def shift_right_jam(value, count):
    """value >> count, with the lowest bit set if any 1 bit was shifted out."""
    if count <= 0:
        return value
    if count >= 63:
        return 1 if value != 0 else 0
    return (value >> count) | (1 if value & ((1 << count) - 1) else 0)


@jit
def shr128_jam(hi, lo, count):
    """hi:lo >> count (unsigned) with sticky jamming into the lowest bit."""
    if count <= 0:
        return hi, lo
    if count >= 128:
        return 0, 1 if (hi | lo) != 0 else 0
    if count >= 64:
        rest = count - 64
        sticky = lo != 0 or (rest > 0 and hi & ((1 << rest) - 1) != 0)
        return 0, srl(hi, rest) | (1 if sticky else 0)
    sticky = lo & ((1 << count) - 1) != 0
    new_lo = srl(lo, count) | (hi << (64 - count)) | (1 if sticky else 0)
    return srl(hi, count), new_lo


@jit
def shl128(hi, lo, count):
    if count <= 0:
        return hi, lo
    if count >= 64:
        return lo << (count - 64), 0
    return (hi << count) | srl(lo, 64 - count), lo << count


@jit
def add128(ah, al, bh, bl):
    lo = al + bl
    return ah + bh + (1 if ltu(lo, al) else 0), lo


@jit
def sub128(ah, al, bh, bl):
    return ah - bh - (1 if ltu(al, bl) else 0), al - bl


@jit
def lt128(ah, al, bh, bl):
    return ltu(ah, bh) or (ah == bh and ltu(al, bl))


# --- formats ----------------------------------------------------------------------
@jit
def canonical_nan(E, M):
    return (((1 << E) - 1) << M) | (1 << (M - 1))


@jit
def fields(bits, E, M):
    """(sign, biased exponent, fraction) of a value of the format."""
    return (bits >> (E + M)) & 1, (bits >> M) & ((1 << E) - 1), bits & ((1 << M) - 1)


@jit
def is_nan(bits, E, M):
    _, exp, frac = fields(bits, E, M)
    return exp == (1 << E) - 1 and frac != 0


@jit
def is_snan(bits, E, M):
    return is_nan(bits, E, M) and not (bits >> (M - 1)) & 1


@jit
def is_inf(bits, E, M):
    _, exp, frac = fields(bits, E, M)
    return exp == (1 << E) - 1 and frac == 0


@jit
def is_zero(bits, E, M):
    return bits & ((1 << (E + M)) - 1) == 0


@jit
def finite_value(bits, E, M):
    """(significand, exponent) with value = significand * 2**exponent, for finite bits."""
    _, exp, frac = fields(bits, E, M)
    bias = (1 << (E - 1)) - 1
    if exp == 0:
        return frac, 1 - bias - M
    return frac | (1 << M), exp - bias - M


@jit
def normalized(bits, E, M):
    """Like ``finite_value`` for nonzero bits, with the significand's top bit at M."""
    sig, exp = finite_value(bits, E, M)
    shift = M + 1 - bitlen(sig)
    return sig << shift, exp - shift


@jit
def infinity(sign, E, M):
    return (sign << (E + M)) | (((1 << E) - 1) << M)


@jit
def nan_result(flags_from, E, M):
    """The canonical NaN, with NV if any operand in ``flags_from`` was signalling."""
    return canonical_nan(E, M), FLAG_NV if flags_from else 0


# --- rounding ---------------------------------------------------------------------
@jit
def _round_increment(sign, kept, rem_vs_half, inexact, rm):
    """Whether to add one unit to the truncated magnitude ``kept``."""
    if rm == RNE:
        return rem_vs_half > 0 or (rem_vs_half == 0 and kept & 1 == 1)
    if rm == RMM:
        return rem_vs_half >= 0
    if rm == RDN:
        return sign == 1 and inexact
    if rm == RUP:
        return sign == 0 and inexact
    return False  # RTZ


@jit
def _truncate(sig, shift):
    """(sig >> shift, remainder compared with half: -1/0/1, inexact) for shift > 0."""
    if shift > 62:
        return 0, -1, sig != 0
    kept = sig >> shift
    rem = sig & ((1 << shift) - 1)
    half = 1 << (shift - 1)
    return kept, (1 if rem > half else (0 if rem == half else -1)), rem != 0


@jit
def round_pack(sign, exp, sig, rm, E, M):
    """Round (-1)**sign * sig * 2**exp to the format: (bits, flags).

    ``sig`` is a non-negative int64 below 2**62 whose lowest bit may be a
    sticky bit (it must then carry at least two bits beyond the precision).
    """
    if sig == 0:
        return sign << (E + M), 0
    bias = (1 << (E - 1)) - 1
    n = bitlen(sig)
    top = exp + n - 1                      # exponent of the leading bit
    quantum = max(top - M, 1 - bias - M)   # exponent of the result's last bit
    shift = quantum - exp
    flags = 0
    if shift <= 0:
        kept = sig << -shift
        inexact = False
    else:
        kept, rem_vs_half, inexact = _truncate(sig, shift)
        if _round_increment(sign, kept, rem_vs_half, inexact, rm):
            kept += 1
        if kept == 1 << (M + 1):
            kept >>= 1
            quantum += 1
        if inexact and top < 1 - bias:
            # Tiny after rounding: would the value, rounded with an unbounded
            # exponent, still be below the smallest normal number?
            unbounded, rem2, inexact2 = _truncate(sig, n - 1 - M) if n - 1 - M > 0 \
                else (sig << (M + 1 - n), -1, False)
            if _round_increment(sign, unbounded, rem2, inexact2, rm):
                unbounded += 1
            if not (unbounded == 1 << (M + 1) and top + 1 >= 1 - bias):
                flags |= FLAG_UF
    biased = quantum + M + bias if kept >= 1 << M else 0
    if biased >= (1 << E) - 1:
        flags |= FLAG_OF | FLAG_NX
        to_max = rm == RTZ or (rm == RDN and sign == 0) or (rm == RUP and sign == 1)
        if to_max:
            return (sign << (E + M)) | ((((1 << E) - 2) << M) | ((1 << M) - 1)), flags
        return infinity(sign, E, M), flags
    if inexact:
        flags |= FLAG_NX
    return (sign << (E + M)) | (biased << M) | (kept & ((1 << M) - 1)), flags


# --- arithmetic -------------------------------------------------------------------
@jit
def add(a, b, rm, E, M, negate_b):
    """a + b (a - b when negate_b)."""
    if is_nan(a, E, M) or is_nan(b, E, M):
        return nan_result(is_snan(a, E, M) or is_snan(b, E, M), E, M)
    sign_a = (a >> (E + M)) & 1
    sign_b = ((b >> (E + M)) & 1) ^ (1 if negate_b else 0)
    if is_inf(a, E, M):
        if is_inf(b, E, M) and sign_a != sign_b:
            return canonical_nan(E, M), FLAG_NV
        return infinity(sign_a, E, M), 0
    if is_inf(b, E, M):
        return infinity(sign_b, E, M), 0
    if is_zero(a, E, M) and is_zero(b, E, M):
        sign = (sign_a | sign_b) if rm == RDN else (sign_a & sign_b)
        return sign << (E + M), 0
    sig_a, exp_a = finite_value(a, E, M)
    sig_b, exp_b = finite_value(b, E, M)
    guard = 60 - M                         # extra low bits: significands stay below 2**61
    sig_a <<= guard
    sig_b <<= guard
    if exp_a < exp_b or (exp_a == exp_b and sig_a < sig_b):
        sig_a, sig_b, exp_a, exp_b, sign_a, sign_b = sig_b, sig_a, exp_b, exp_a, sign_b, sign_a
    sig_b = shift_right_jam(sig_b, exp_a - exp_b)
    if sign_a == sign_b:
        return round_pack(sign_a, exp_a - guard, sig_a + sig_b, rm, E, M)
    difference = sig_a - sig_b
    if difference == 0:
        return (1 if rm == RDN else 0) << (E + M), 0
    return round_pack(sign_a, exp_a - guard, difference, rm, E, M)


@jit
def _product(sig_a, sig_b):
    """The exact product of two significands as a 128-bit hi:lo pair."""
    return mulhu(sig_a, sig_b), sig_a * sig_b


@jit
def mul(a, b, rm, E, M):
    if is_nan(a, E, M) or is_nan(b, E, M):
        return nan_result(is_snan(a, E, M) or is_snan(b, E, M), E, M)
    sign = ((a ^ b) >> (E + M)) & 1
    if is_inf(a, E, M) or is_inf(b, E, M):
        if is_zero(a, E, M) or is_zero(b, E, M):
            return canonical_nan(E, M), FLAG_NV
        return infinity(sign, E, M), 0
    if is_zero(a, E, M) or is_zero(b, E, M):
        return sign << (E + M), 0
    sig_a, exp_a = finite_value(a, E, M)
    sig_b, exp_b = finite_value(b, E, M)
    hi, lo = _product(sig_a, sig_b)
    shift = bitlen128(hi, lo) - 62
    if shift > 0:
        hi, lo = shr128_jam(hi, lo, shift)
    else:
        shift = 0
    return round_pack(sign, exp_a + exp_b + shift, lo, rm, E, M)


@jit
def div(a, b, rm, E, M):
    if is_nan(a, E, M) or is_nan(b, E, M):
        return nan_result(is_snan(a, E, M) or is_snan(b, E, M), E, M)
    sign = ((a ^ b) >> (E + M)) & 1
    if is_inf(a, E, M):
        if is_inf(b, E, M):
            return canonical_nan(E, M), FLAG_NV
        return infinity(sign, E, M), 0
    if is_inf(b, E, M):
        return sign << (E + M), 0
    if is_zero(b, E, M):
        if is_zero(a, E, M):
            return canonical_nan(E, M), FLAG_NV
        return infinity(sign, E, M), FLAG_DZ
    if is_zero(a, E, M):
        return sign << (E + M), 0
    sig_a, exp_a = normalized(a, E, M)
    sig_b, exp_b = normalized(b, E, M)
    # Long division: M + 4 quotient bits, the first of weight 2**0.
    remainder = sig_a
    quotient = 0
    for _ in range(M + 4):
        quotient <<= 1
        if remainder >= sig_b:
            remainder -= sig_b
            quotient |= 1
        remainder <<= 1
    if remainder:
        quotient |= 1
    return round_pack(sign, exp_a - exp_b - (M + 3), quotient, rm, E, M)


@jit
def sqrt(a, rm, E, M):
    if is_nan(a, E, M):
        return nan_result(is_snan(a, E, M), E, M)
    sign = (a >> (E + M)) & 1
    if is_zero(a, E, M):
        return a, 0
    if sign:
        return canonical_nan(E, M), FLAG_NV
    if is_inf(a, E, M):
        return a, 0
    sig, exp = normalized(a, E, M)
    if exp & 1:
        sig <<= 1
        exp -= 1
    # Digit-by-digit square root of sig * 4**extra, two radicand bits at a time.
    extra = M // 2 + 3
    pairs = (bitlen(sig) + 1) // 2
    root = 0
    remainder = 0
    for i in range(pairs + extra):
        position = pairs - 1 - i
        next_bits = (sig >> (2 * position)) & 3 if position >= 0 else 0
        remainder = (remainder << 2) | next_bits
        trial = (root << 2) | 1
        if remainder >= trial:
            remainder -= trial
            root = (root << 1) | 1
        else:
            root <<= 1
    if remainder:
        root |= 1
    return round_pack(0, exp // 2 - extra, root, rm, E, M)


@jit
def fma(a, b, c, rm, E, M, negate_product, negate_addend):
    """(a * b) + c with one rounding; the product and addend may be negated."""
    if is_nan(a, E, M) or is_nan(b, E, M) or is_nan(c, E, M):
        invalid = is_snan(a, E, M) or is_snan(b, E, M) or is_snan(c, E, M) or \
            ((is_inf(a, E, M) and is_zero(b, E, M)) or (is_zero(a, E, M) and is_inf(b, E, M)))
        return nan_result(invalid, E, M)
    sign_p = (((a ^ b) >> (E + M)) & 1) ^ (1 if negate_product else 0)
    sign_c = ((c >> (E + M)) & 1) ^ (1 if negate_addend else 0)
    if is_inf(a, E, M) or is_inf(b, E, M):
        if is_zero(a, E, M) or is_zero(b, E, M):
            return canonical_nan(E, M), FLAG_NV
        if is_inf(c, E, M) and sign_c != sign_p:
            return canonical_nan(E, M), FLAG_NV
        return infinity(sign_p, E, M), 0
    if is_inf(c, E, M):
        return infinity(sign_c, E, M), 0
    product_zero = is_zero(a, E, M) or is_zero(b, E, M)
    if product_zero:
        if is_zero(c, E, M):
            sign = (sign_p | sign_c) if rm == RDN else (sign_p & sign_c)
            return sign << (E + M), 0
        return (c & ((1 << (E + M)) - 1)) | (sign_c << (E + M)), 0
    sig_a, exp_a = finite_value(a, E, M)
    sig_b, exp_b = finite_value(b, E, M)
    p_hi, p_lo = _product(sig_a, sig_b)
    exp_p = exp_a + exp_b
    if is_zero(c, E, M):
        shift = bitlen128(p_hi, p_lo) - 62
        if shift > 0:
            p_hi, p_lo = shr128_jam(p_hi, p_lo, shift)
        else:
            shift = 0
        return round_pack(sign_p, exp_p + shift, p_lo, rm, E, M)
    sig_c, exp_c = finite_value(c, E, M)
    # Align both in a 128-bit frame whose larger value tops out at bit 124.
    top = max(exp_p + bitlen128(p_hi, p_lo), exp_c + bitlen(sig_c))
    frame = top - 124
    p_hi, p_lo = _place(p_hi, p_lo, exp_p - frame)
    c_hi, c_lo = _place(0, sig_c, exp_c - frame)
    if sign_p == sign_c:
        r_hi, r_lo = add128(p_hi, p_lo, c_hi, c_lo)
        sign = sign_p
    elif lt128(p_hi, p_lo, c_hi, c_lo):
        r_hi, r_lo = sub128(c_hi, c_lo, p_hi, p_lo)
        sign = sign_c
    else:
        r_hi, r_lo = sub128(p_hi, p_lo, c_hi, c_lo)
        sign = sign_p
    if r_hi == 0 and r_lo == 0:
        return (1 if rm == RDN else 0) << (E + M), 0
    shift = bitlen128(r_hi, r_lo) - 62
    if shift > 0:
        r_hi, r_lo = shr128_jam(r_hi, r_lo, shift)
    else:
        shift = 0
    return round_pack(sign, frame + shift, r_lo, rm, E, M)


@jit
def _place(hi, lo, shift):
    """hi:lo shifted left by ``shift`` (right with jamming when negative)."""
    if shift >= 0:
        return shl128(hi, lo, shift)
    return shr128_jam(hi, lo, -shift)


# --- conversions ------------------------------------------------------------------
@jit
def to_int(a, rm, E, M, width, signed):
    """Float to a ``width``-bit integer (ISA spec 11.7): (result as int64, flags).

    NaN and too large values give the largest integer, too small the
    smallest, with NV; a 32-bit result is sign-extended to 64 bits.
    """
    if signed:
        largest = (1 << (width - 1)) - 1
        smallest = -(1 << (width - 1))
    else:
        largest = (1 << width) - 1 if width < 64 else -1  # all ones
        smallest = 0
    sign = (a >> (E + M)) & 1
    if is_nan(a, E, M):
        return _sext(largest, width), FLAG_NV
    if is_inf(a, E, M):
        return _sext(smallest if sign else largest, width), FLAG_NV
    if is_zero(a, E, M):
        return 0, 0
    sig, exp = finite_value(a, E, M)
    if exp >= 0:
        if bitlen(sig) + exp > 64:
            return _sext(smallest if sign else largest, width), FLAG_NV
        magnitude = sig << exp       # may use bit 63 (unsigned 64-bit)
        inexact = False
    else:
        kept, rem_vs_half, inexact = _truncate(sig, -exp)
        if _round_increment(sign, kept, rem_vs_half, inexact, rm):
            kept += 1
        magnitude = kept
    if sign:
        if magnitude == 0:
            return 0, FLAG_NX if inexact else 0
        if not signed or ltu(-smallest, magnitude):
            return _sext(smallest, width), FLAG_NV
        return -magnitude, FLAG_NX if inexact else 0
    limit = largest
    if signed or width < 64:
        if magnitude < 0 or magnitude > limit:
            return _sext(largest, width), FLAG_NV
    return _sext(magnitude, width), FLAG_NX if inexact else 0


@jit
def _sext(value, width):
    if width == 64:
        return value
    return ((value & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000


@jit
def from_int(value, rm, E, M, signed):
    """A 64-bit integer (already extended from 32 bits if needed) to float."""
    sign = 0
    if signed and value < 0:
        sign = 1
        value = -value               # -2**63 stays negative: handled as unsigned below
    exp = 0
    if value < 0 or value >= 1 << 62:  # keep below 2**62, with a sticky bit
        exp = 2
        value = (srl(value, 2)) | (1 if value & 3 else 0)
    return round_pack(sign, exp, value, rm, E, M)


@jit
def convert(a, rm, from_e, from_m, to_e, to_m):
    """Between formats (fcvt.s.d, fcvt.d.s)."""
    if is_nan(a, from_e, from_m):
        return nan_result(is_snan(a, from_e, from_m), to_e, to_m)
    sign = (a >> (from_e + from_m)) & 1
    if is_inf(a, from_e, from_m):
        return infinity(sign, to_e, to_m), 0
    if is_zero(a, from_e, from_m):
        return sign << (to_e + to_m), 0
    sig, exp = finite_value(a, from_e, from_m)
    return round_pack(sign, exp - 3, sig << 3, rm, to_e, to_m)


# --- comparisons ------------------------------------------------------------------
@jit
def _order_key(bits, E, M):
    magnitude = bits & ((1 << (E + M)) - 1)
    return -magnitude if (bits >> (E + M)) & 1 else magnitude


@jit
def _total_key(bits, E, M):
    """Like ``_order_key`` but with -0 below +0, as fmin/fmax order them."""
    magnitude = bits & ((1 << (E + M)) - 1)
    return -magnitude - 1 if (bits >> (E + M)) & 1 else magnitude


@jit
def compare(a, b, E, M, kind):
    """kind 2: feq (quiet), 1: flt, 0: fle (signalling). (0 or 1, flags)."""
    if is_nan(a, E, M) or is_nan(b, E, M):
        if kind == 2:
            return 0, FLAG_NV if is_snan(a, E, M) or is_snan(b, E, M) else 0
        return 0, FLAG_NV
    key_a = _order_key(a, E, M)
    key_b = _order_key(b, E, M)
    if kind == 2:
        return (1 if key_a == key_b else 0), 0
    if kind == 1:
        return (1 if key_a < key_b else 0), 0
    return (1 if key_a <= key_b else 0), 0


@jit
def min_max(a, b, E, M, want_max):
    """fmin/fmax (IEEE 754-2019 minimumNumber/maximumNumber, -0 < +0)."""
    nan_a = is_nan(a, E, M)
    nan_b = is_nan(b, E, M)
    flags = FLAG_NV if is_snan(a, E, M) or is_snan(b, E, M) else 0
    if nan_a and nan_b:
        return canonical_nan(E, M), flags
    if nan_a:
        return b, flags
    if nan_b:
        return a, flags
    a_less = _total_key(a, E, M) < _total_key(b, E, M)
    if want_max:
        return (b if a_less else a), flags
    return (a if a_less else b), flags


@jit
def classify(a, E, M):
    """fclass: the one-hot class mask of ISA spec table 11.5."""
    sign, exp, frac = fields(a, E, M)
    if exp == (1 << E) - 1:
        if frac == 0:
            return 1 << 0 if sign else 1 << 7
        return 1 << 9 if (frac >> (M - 1)) & 1 else 1 << 8
    if exp == 0:
        if frac == 0:
            return 1 << 3 if sign else 1 << 4
        return 1 << 2 if sign else 1 << 5
    return 1 << 1 if sign else 1 << 6
