"""Triton kernels of the counter-based noise, for GPU tensors (:mod:`zolightning.functional.counter_noise` defines
the scheme).

The same operations as the torch reference and the numba kernels: Philox4x32-10 on uint32 words, Cephes' float32
polynomials for ln, sin and cos, the correctly rounded square root (``sqrt_rn``), and kernels compiled with
``enable_fp_fusion=False`` so that no multiply–add is fused: z and the moved weights agree with the CPU kernels (the
tests hold them to 2 ulp; run under ``TRITON_INTERPRET=1`` on CPU tensors they agree bitwise). The kernels call
only Triton's builtins, none of its ``@jit`` library functions (``tl.zeros_like`` …), so that they run under the
interpreter even when Triton itself was imported without it. Each program moves a
tile of whole Philox blocks: 256 blocks of 4 elements (Gaussian) or 8 blocks of 128 (Rademacher), so every Philox
call is made once. ``pip install zolightning[gpu]`` installs Triton; importing this module fails without it.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from zolightning.functional import counter_philox as spec

_L0, _L1, _L2 = (tl.constexpr(c) for c in spec.LOG_POLY[:3])
_L3, _L4, _L5 = (tl.constexpr(c) for c in spec.LOG_POLY[3:6])
_L6, _L7, _L8 = (tl.constexpr(c) for c in spec.LOG_POLY[6:])
_SQRTHF = tl.constexpr(spec.LOG_SQRTHF)
_LN2_LO = tl.constexpr(spec.LOG_LN2_LO)
_LN2_HI = tl.constexpr(spec.LOG_LN2_HI)
_S0, _S1, _S2 = (tl.constexpr(c) for c in spec.SIN_POLY)
_C0, _C1, _C2 = (tl.constexpr(c) for c in spec.COS_POLY)
_ANGLE = tl.constexpr(spec.ANGLE_STEP)
_TWO_M24 = tl.constexpr(spec.TWO_POW_M24)
_MUL_0 = tl.constexpr(spec.PHILOX_M0)
_MUL_1 = tl.constexpr(spec.PHILOX_M1)
_WEYL_0 = tl.constexpr(spec.PHILOX_W0)
_WEYL_1 = tl.constexpr(spec.PHILOX_W1)
_FP16_TO_INF = tl.constexpr(2.0**112)
_FP16_TO_ZERO = tl.constexpr(2.0**-110)
_FP16_EXP_SCALE = tl.constexpr(2.0**-112)

# Scalar arguments Triton must not specialise on (a value of 1, or divisibility by 16, would compile a new kernel).
_SCALARS = ["n", "offset", "first_block", "k0_", "k1_", "c2_", "c3_", "r0_", "r1_", "r2_", "r3_", "pre", "decay",
            "alpha"]

GAUSSIAN_TILE = 256  # Philox blocks per program (1024 elements)
RADEMACHER_TILE = 8  # Philox blocks per program (1024 elements)


@triton.jit
def _philox(c0, c1, c2, c3, k0, k1):
    for _ in tl.static_range(10):
        hi_0 = tl.umulhi(c0, _MUL_0)
        hi_1 = tl.umulhi(c2, _MUL_1)
        lo_0 = c0 * _MUL_0
        lo_1 = c2 * _MUL_1
        c0, c1, c2, c3 = hi_1 ^ c1 ^ k0, lo_1, hi_0 ^ c3 ^ k1, lo_0
        k0 = k0 + _WEYL_0
        k1 = k1 + _WEYL_1
    return c0, c1, c2, c3


@triton.jit
def _neg2log(word):
    k = ((word >> 8) + 1).to(tl.float32)
    bits = k.to(tl.uint32, bitcast=True)
    exponent = (bits >> 23).to(tl.int32) - 150
    mantissa = ((bits & 0x7FFFFF) | 0x3F000000).to(tl.float32, bitcast=True)
    low = mantissa < _SQRTHF
    exponent = exponent - low.to(tl.int32)
    x = tl.where(low, mantissa + mantissa - 1.0, mantissa - 1.0)
    z = x * x
    y = ((((((((_L0 * x + _L1) * x + _L2) * x + _L3) * x + _L4) * x + _L5) * x + _L6) * x + _L7) * x + _L8)
    y = y * x * z
    fe = exponent.to(tl.float32)
    y = y + _LN2_LO * fe
    y = y - 0.5 * z
    result = x + y
    result = result + _LN2_HI * fe
    return result * -2.0


@triton.jit
def _cos_sin(word):
    shifted = word + 0x20000000
    quadrant = shifted >> 30
    t = (((shifted & 0x3FFFFFFF) >> 6).to(tl.int32) - 8388608).to(tl.float32) * _ANGLE
    z = t * t
    s = ((_S0 * z + _S1) * z + _S2) * z * t + t
    c = ((_C0 * z + _C1) * z + _C2) * z * z - 0.5 * z + 1.0
    cos = tl.where(quadrant == 0, c, tl.where(quadrant == 1, -s, tl.where(quadrant == 2, -c, s)))
    sin = tl.where(quadrant == 0, s, tl.where(quadrant == 1, c, tl.where(quadrant == 2, -s, -c)))
    return cos, sin


@triton.jit
def _uniform(word):
    return (word >> 8).to(tl.float32) * _TWO_M24


@triton.jit
def _pick(lane, x0, x1, x2, x3):
    return tl.where(lane == 0, x0, tl.where(lane == 1, x1, tl.where(lane == 2, x2, x3)))


@triton.jit
def _half_to_float(h, FMT: tl.constexpr):
    w = h.to(tl.uint32) << 16
    if FMT == 1:
        result = w.to(tl.float32, bitcast=True)
    else:
        sign = w & 0x80000000
        two_w = w + w
        normalized = ((two_w >> 4) + (0xE0 << 23)).to(tl.float32, bitcast=True) * _FP16_EXP_SCALE
        denormalized = ((two_w >> 17) | (126 << 23)).to(tl.float32, bitcast=True) - 0.5
        magnitude = tl.where(two_w < (1 << 27), denormalized.to(tl.uint32, bitcast=True),
                             normalized.to(tl.uint32, bitcast=True))
        result = (sign | magnitude).to(tl.float32, bitcast=True)
    return result


@triton.jit
def _float_to_half(value, FMT: tl.constexpr):
    w = value.to(tl.uint32, bitcast=True)
    if FMT == 1:
        result = tl.where(value == value, (w + 0x7FFF + ((w >> 16) & 1)) >> 16, 0x7FC0)
    else:
        base = (tl.abs(value) * _FP16_TO_INF) * _FP16_TO_ZERO
        shl1_w = w + w
        sign = w & 0x80000000
        bias = shl1_w & 0xFF000000
        bias = tl.where(bias < 0x71000000, 0x71000000, bias)
        base = ((bias >> 1) + 0x07800000).to(tl.float32, bitcast=True) + base
        bits = base.to(tl.uint32, bitcast=True)
        nonsign = ((bits >> 13) & 0x7C00) + (bits & 0x0FFF)
        result = (sign >> 16) | tl.where(shl1_w > 0xFF000000, 0x7E00, nonsign)
    return result.to(tl.uint32)


@triton.jit
def _round_half(value, uniform, FMT: tl.constexpr, STOCHASTIC: tl.constexpr):
    nearest = _float_to_half(value, FMT)
    if STOCHASTIC:
        back = _half_to_float(nearest, FMT)
        error = value - back
        up = error >= 0.0
        away = ((nearest >> 15) == 0) == up
        moved = tl.where(away, nearest + 1, nearest - 1)
        neighbour = tl.where((nearest & 0x7FFF) == 0, tl.where(up, 1, 0x8001), moved).to(tl.uint32)
        gap = _half_to_float(neighbour, FMT) - back
        probability = tl.where(gap != 0.0, tl.math.div_rn(error, tl.where(gap != 0.0, gap, 1.0)), 0.0)
        probability = tl.where(probability == probability, probability, 0.0)
        result = tl.where(uniform < probability, neighbour, nearest)
    else:
        result = nearest
    return result


@triton.jit
def _move(ptrs, mask, z, uniform, pre, decay, alpha, MODE: tl.constexpr, FMT: tl.constexpr,
          STOCHASTIC: tl.constexpr):
    """Load θ, combine with z per MODE (0: z; 1: θ + pre·z; 2: (θ + pre·z)·decay + alpha·z), round, store."""
    if MODE == 0:
        tl.store(ptrs, z, mask=mask)
    else:
        if FMT == 0:
            t = tl.load(ptrs, mask=mask, other=0.0)
        else:
            t = _half_to_float(tl.load(ptrs, mask=mask, other=0).to(tl.uint16, bitcast=True), FMT)
        value = t + pre * z
        if MODE == 2:
            value = value * decay + alpha * z
        if FMT == 0:
            tl.store(ptrs, value, mask=mask)
        else:
            bits = _round_half(value, uniform, FMT, STOCHASTIC)
            tl.store(ptrs, bits.to(tl.uint16).to(tl.int16, bitcast=True), mask=mask)


@triton.jit(do_not_specialize=_SCALARS)
def _gaussian_kernel(theta_ptr, n, offset, first_block, k0_, k1_, c2_, c3_, r0_, r1_, r2_, r3_, pre, decay, alpha,
                     MODE: tl.constexpr, FMT: tl.constexpr, STOCHASTIC: tl.constexpr, TILE: tl.constexpr):
    k0, k1, c2, c3 = k0_.to(tl.uint32), k1_.to(tl.uint32), c2_.to(tl.uint32), c3_.to(tl.uint32)
    blocks = first_block.to(tl.int64) + tl.program_id(0).to(tl.int64) * TILE + tl.arange(0, TILE).to(tl.int64)
    lanes = tl.arange(0, 4)
    index = blocks[:, None] * 4 + lanes[None, :] - offset  # (TILE, 4): the elements' positions in θ
    mask = (index >= 0) & (index < n)
    low, high = (blocks & 0xFFFFFFFF).to(tl.uint32), (blocks >> 32).to(tl.uint32)
    x0, x1, x2, x3 = _philox(low, high, c2 + low * 0, c3 + low * 0, k0, k1)
    radius_0 = tl.sqrt_rn(_neg2log(x0))
    radius_1 = tl.sqrt_rn(_neg2log(x2))
    cos_0, sin_0 = _cos_sin(x1)
    cos_1, sin_1 = _cos_sin(x3)
    z = _pick(lanes[None, :], (radius_0 * cos_0)[:, None], (radius_0 * sin_0)[:, None],
              (radius_1 * cos_1)[:, None], (radius_1 * sin_1)[:, None])
    uniform = z * 0.0
    if STOCHASTIC:
        u0, u1, u2, u3 = _philox(low, high, r2_.to(tl.uint32) + low * 0,
                                 r3_.to(tl.uint32) + low * 0, r0_.to(tl.uint32), r1_.to(tl.uint32))
        uniform = _pick(lanes[None, :], _uniform(u0)[:, None], _uniform(u1)[:, None], _uniform(u2)[:, None],
                        _uniform(u3)[:, None])
    _move(theta_ptr + index, mask, z, uniform, pre, decay, alpha, MODE, FMT, STOCHASTIC)


@triton.jit(do_not_specialize=_SCALARS)
def _rademacher_kernel(theta_ptr, n, offset, first_block, k0_, k1_, c2_, c3_, r0_, r1_, r2_, r3_, pre, decay,
                       alpha, MODE: tl.constexpr, FMT: tl.constexpr, STOCHASTIC: tl.constexpr, TILE: tl.constexpr):
    k0, k1, c2, c3 = k0_.to(tl.uint32), k1_.to(tl.uint32), c2_.to(tl.uint32), c3_.to(tl.uint32)
    blocks = first_block.to(tl.int64) + tl.program_id(0).to(tl.int64) * TILE + tl.arange(0, TILE).to(tl.int64)
    lanes = tl.arange(0, 128)
    element = blocks[:, None] * 128 + lanes[None, :]  # (TILE, 128) global indices
    index = element - offset
    mask = (index >= 0) & (index < n)
    low, high = (blocks & 0xFFFFFFFF).to(tl.uint32), (blocks >> 32).to(tl.uint32)
    x0, x1, x2, x3 = _philox(low, high, c2 + low * 0, c3 + low * 0, k0, k1)
    word = _pick((lanes >> 5)[None, :], x0[:, None], x1[:, None], x2[:, None], x3[:, None])
    bit = (word >> (lanes & 31).to(tl.uint32)[None, :]) & 1
    z = 1.0 - bit.to(tl.float32) * 2.0
    uniform = z * 0.0
    if STOCHASTIC:  # the uniforms' blocks are 4 elements: one Philox call per element here (4× redundant)
        quad = element >> 2
        q_low, q_high = (quad & 0xFFFFFFFF).to(tl.uint32), (quad >> 32).to(tl.uint32)
        u0, u1, u2, u3 = _philox(q_low, q_high, r2_.to(tl.uint32) + q_low * 0,
                                 r3_.to(tl.uint32) + q_low * 0, r0_.to(tl.uint32), r1_.to(tl.uint32))
        uniform = _uniform(_pick((element & 3).to(tl.int32), u0, u1, u2, u3))
    _move(theta_ptr + index, mask, z, uniform, pre, decay, alpha, MODE, FMT, STOCHASTIC)


_FORMATS = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def fused_(
    param: torch.Tensor,
    words: tuple[int, int, int, int],
    rounding_words: tuple[int, int, int, int] | None,
    offset: int,
    distribution: str,
    mode: int,
    pre: float,
    decay: float,
    alpha: float,
    rounding: str,
) -> torch.Tensor:
    """Run the kernel for ``mode`` (0: write z, 1: add, 2: update) on a contiguous tensor, in place."""
    flat = param.detach().view(-1)
    n = flat.numel()
    fmt = _FORMATS[param.dtype]
    target = flat if fmt == 0 else flat.view(torch.int16)
    gaussian = distribution == "gaussian"
    block = spec.GAUSSIAN_BLOCK if gaussian else spec.RADEMACHER_BLOCK
    tile = GAUSSIAN_TILE if gaussian else RADEMACHER_TILE
    first_block = offset // block
    blocks = (offset + n + block - 1) // block - first_block
    kernel = _gaussian_kernel if gaussian else _rademacher_kernel
    r0, r1, r2, r3 = rounding_words or (0, 0, 0, 0)
    extra = {} if _interpreting() else {"enable_fp_fusion": False}
    kernel[(triton.cdiv(blocks, tile),)](
        target, n, offset, first_block, *words, r0, r1, r2, r3,
        spec._f32(pre), spec._f32(decay), spec._f32(alpha),
        MODE=mode, FMT=fmt, STOCHASTIC=(rounding == "stochastic" and fmt != 0), TILE=tile, **extra,
    )
    return param
