"""The counter-based noise scheme in numba: Philox4x32-10, the float32 transforms (Box–Muller's log, sine and cosine,
the uniforms of stochastic rounding) and the 16-bit float formats, as functions inlined into the kernels of
:mod:`zolightning.functional.numba_noise`. Each computes exactly the float32 operations of the torch reference
(:mod:`zolightning.functional.counter_philox`), so the two agree bitwise. Importing it imports numba.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from zolightning.functional import counter_philox as spec

# ---------------------------------------------------------------------------------------------- bit casts


@intrinsic
def _float_bits(typingctx, value):  # noqa: ARG001
    """The 32-bit pattern of a float32 (as uint32)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):  # noqa: ARG001
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def _bits_float(typingctx, bits):  # noqa: ARG001
    """The float32 with the low 32 bits of an integer as its pattern."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):  # noqa: ARG001
        value = args[0]
        if bits.bitwidth > 32:
            value = builder.trunc(value, ir.IntType(32))
        elif bits.bitwidth < 32:
            value = builder.zext(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


# ---------------------------------------------------------------------------------------------- constants

U = np.uint64
F = np.float32
_M32 = U(spec.MASK_32)
_MUL_0, _MUL_1 = U(spec.PHILOX_M0), U(spec.PHILOX_M1)
_WEYL_0, _WEYL_1 = U(spec.PHILOX_W0), U(spec.PHILOX_W1)
_0, _1, _2, _3, _8 = U(0), U(1), U(2), U(3), U(8)
_5, _6, _7, _16, _23, _30, _31, _32 = U(5), U(6), U(7), U(16), U(23), U(30), U(31), U(32)
_L0, _L1, _L2, _L3, _L4, _L5, _L6, _L7, _L8 = (F(c) for c in spec.LOG_POLY)
_SQRTHF, _LN2_LO, _LN2_HI = F(spec.LOG_SQRTHF), F(spec.LOG_LN2_LO), F(spec.LOG_LN2_HI)
_S0, _S1, _S2 = (F(c) for c in spec.SIN_POLY)
_C0, _C1, _C2 = (F(c) for c in spec.COS_POLY)
_ANGLE, _TWO_M24 = F(spec.ANGLE_STEP), F(spec.TWO_POW_M24)
_HALF, _ONE, _MINUS_TWO, _ZERO = F(0.5), F(1.0), F(-2.0), F(0.0)
_FP16_TO_INF, _FP16_TO_ZERO, _FP16_EXP_SCALE = F(2.0**112), F(2.0**-110), F(2.0**-112)

# ---------------------------------------------------------------------------------------------- the scheme


@njit(inline="always")
def _philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint64 values holding 32-bit words."""
    for _ in range(10):
        product_0 = _MUL_0 * c0
        product_1 = _MUL_1 * c2
        next_0 = (product_1 >> _32) ^ c1 ^ k0
        next_2 = (product_0 >> _32) ^ c3 ^ k1
        c1 = product_1 & _M32
        c3 = product_0 & _M32
        c0 = next_0
        c2 = next_2
        k0 = (k0 + _WEYL_0) & _M32
        k1 = (k1 + _WEYL_1) & _M32
    return c0, c1, c2, c3


@njit(inline="always")
def _neg2log(word):
    k = F(np.int64((word >> _8) + _1))
    bits = U(_float_bits(k))
    exponent = np.int64(bits >> _23) - 150
    mantissa = _bits_float((bits & U(0x7FFFFF)) | U(0x3F000000))
    low = mantissa < _SQRTHF
    exponent = exponent - np.int64(low)
    x = (mantissa + mantissa - _ONE) if low else (mantissa - _ONE)
    z = x * x
    y = ((((((((_L0 * x + _L1) * x + _L2) * x + _L3) * x + _L4) * x + _L5) * x + _L6) * x + _L7) * x + _L8)
    y = y * x * z
    fe = F(exponent)
    y = y + _LN2_LO * fe
    y = y - _HALF * z
    result = x + y
    result = result + _LN2_HI * fe
    return result * _MINUS_TWO


@njit(inline="always")
def _cos_sin(word):
    shifted = (word + U(0x20000000)) & _M32
    quadrant = shifted >> _30
    t = F(np.int64((shifted & U(0x3FFFFFFF)) >> _6) - 8388608) * _ANGLE
    z = t * t
    s = ((_S0 * z + _S1) * z + _S2) * z * t + t
    c = ((_C0 * z + _C1) * z + _C2) * z * z - _HALF * z + _ONE
    even = (quadrant & _1) == _0  # quadrants 0 and 2: (c, s); 1 and 3: (s, c), then the signs
    cos = c if even else s
    sin = s if even else c
    cos = -cos if ((quadrant + _1) & _2) != _0 else cos  # negative in quadrants 1 and 2
    sin = -sin if (quadrant & _2) != _0 else sin  # negative in quadrants 2 and 3
    return cos, sin


@njit(inline="always")
def _gauss4(k0, k1, c2, c3, block):
    x0, x1, x2, x3 = _philox(block & _M32, block >> _32, c2, c3, k0, k1)
    radius_0 = F(np.sqrt(_neg2log(x0)))  # exact: a double sqrt rounded to float32 is the float32 sqrt
    radius_1 = F(np.sqrt(_neg2log(x2)))
    cos_0, sin_0 = _cos_sin(x1)
    cos_1, sin_1 = _cos_sin(x3)
    return radius_0 * cos_0, radius_0 * sin_0, radius_1 * cos_1, radius_1 * sin_1


@njit(inline="always")
def _uniform(word):
    return F(np.int64(word >> _8)) * _TWO_M24


@njit(inline="always")
def _pick(x0, x1, x2, x3, lane):
    return x0 if lane == 0 else (x1 if lane == 1 else (x2 if lane == 2 else x3))


@njit(inline="always")
def _combine(t, z, mode, pre, decay, alpha):
    """mode 0: z; 1: t + pre·z; 2: (t + pre·z)·decay + alpha·z (each operation rounded to float32)."""
    moved = t + pre * z
    updated = moved * decay + alpha * z
    return z if mode == 0 else (moved if mode == 1 else updated)


# ---------------------------------------------------------------------------------------------- 16-bit formats


@njit(inline="always")
def _half_to_float(h, fmt):
    """bf16 (fmt 1) or IEEE fp16 (fmt 2) bits → float32, exactly (fp16 as c10's fp16_ieee_to_fp32_value)."""
    w = h << _16
    sign = w & U(0x80000000)
    two_w = (w + w) & _M32
    normalized = _bits_float((two_w >> U(4)) + U(0xE0 << 23)) * _FP16_EXP_SCALE
    denormalized = _bits_float((two_w >> U(17)) | U(126 << 23)) - _HALF
    magnitude = U(_float_bits(denormalized)) if two_w < U(1 << 27) else U(_float_bits(normalized))
    fp16 = _bits_float(sign | magnitude)
    return _bits_float(w) if fmt == 1 else fp16


@njit(inline="always")
def _float_to_half(value, fmt):
    """float32 → bf16 (fmt 1) or fp16 (fmt 2) bits, rounded to nearest, ties to even (c10's conversions)."""
    w = U(_float_bits(value))
    # bf16: round to nearest even on the upper half; NaN becomes the quiet NaN 0x7FC0.
    bf16 = (((w + U(0x7FFF) + ((w >> _16) & _1)) & _M32) >> _16) if value == value else U(0x7FC0)
    # fp16: c10's fp16_ieee_from_fp32_value.
    base = (abs(value) * _FP16_TO_INF) * _FP16_TO_ZERO
    shl1_w = (w + w) & _M32
    sign = w & U(0x80000000)
    bias = shl1_w & U(0xFF000000)
    bias = U(0x71000000) if bias < U(0x71000000) else bias
    base = _bits_float((bias >> _1) + U(0x07800000)) + base
    bits = U(_float_bits(base))
    nonsign = ((bits >> U(13)) & U(0x7C00)) + (bits & U(0x0FFF))
    fp16 = (sign >> _16) | (U(0x7E00) if shl1_w > U(0xFF000000) else nonsign)
    return bf16 if fmt == 1 else fp16


@njit(inline="always")
def _next_half(h, up):
    """The 16-bit float next to ``h`` toward +inf (``up``) or −inf, as torch.nextafter (sign-magnitude bits)."""
    away = (((h >> U(15)) & _1) == _0) == up  # moving away from zero: the magnitude grows
    moved = (h + _1) if away else (h - _1)
    from_zero = _1 if up else U(0x8001)  # the smallest subnormal on the side of the move
    return from_zero if (h & U(0x7FFF)) == _0 else moved


@njit(inline="always")
def _round_half(value, uniform, fmt, stochastic):
    """``value`` written as fmt bits: nearest, or stochastically with ``uniform`` ∈ [0, 1) (as round_stochastic_)."""
    nearest = _float_to_half(value, fmt)
    back = _half_to_float(nearest, fmt)
    error = value - back
    up = error >= _ZERO
    neighbour = _next_half(nearest, up)
    gap = _half_to_float(neighbour, fmt) - back
    probability = error / gap if gap != _ZERO else _ZERO
    probability = probability if probability == probability else _ZERO  # NaN → 0 (nan_to_num)
    chosen = neighbour if uniform < probability else nearest
    return chosen if stochastic else nearest
