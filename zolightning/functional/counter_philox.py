"""The counter-based noise scheme, defined once: Philox4x32-10 words, the Gaussian and Rademacher transforms in
fp32 arithmetic that every backend reproduces bit for bit, and the pure-torch reference of the fused moves.

The backends (``numba_noise.py`` on CPU, ``triton_noise.py`` on GPU) implement exactly these formulas; the public
functions and the choice of backend are in :mod:`zolightning.functional.counter_noise`.
"""

from __future__ import annotations

import math
import struct
from typing import Literal

import torch
from torch import Tensor

from zolightning.functional.checks import check_choice

# The same choices as zolightning.functional.noise.Distribution (not imported from there: noise.py re-exports
# counter_noise, and a one-way import keeps either module importable first).
Distribution = Literal["gaussian", "rademacher"]
Rounding = Literal["nearest", "stochastic"]
Backend = Literal["auto", "torch", "numba", "triton"]

SCHEME_VERSION = 1

MASK_32 = 0xFFFFFFFF
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10
STREAM_DIRECTION = 0
STREAM_ROUNDING = 1
GAUSSIAN_BLOCK = 4  # elements per Philox call
RADEMACHER_BLOCK = 128  # 4 words × 32 bits


def _f32(value: float) -> float:
    """``value`` rounded to the nearest float32 (as a Python float, exactly representable in float32); ±inf beyond."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


# float32 constants shared by every implementation (the kernels import these values).
LOG_POLY = tuple(
    _f32(c)
    for c in (
        7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
        -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
    )
)
LOG_SQRTHF = _f32(0.707106781186547524)
LOG_LN2_LO = _f32(-2.12194440e-4)
LOG_LN2_HI = _f32(0.693359375)
SIN_POLY = tuple(_f32(c) for c in (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1))
COS_POLY = tuple(_f32(c) for c in (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2))
ANGLE_STEP = _f32(2.0 * 3.14159265358979323846 / 2**26)  # one step of the 26-bit angle, in radians
TWO_POW_M24 = _f32(2.0**-24)


def check_seed_and_key(seed: int, key: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"`seed` must be an integer in [0, 2**64), got {seed!r}.")
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < 2**63:
        raise ValueError(
            f"`key` must be an integer in [0, 2**63) (a tensor key such as stable_key(name)), got {key!r}."
        )


def philox_words(seed: int, key: int, stream: int = STREAM_DIRECTION) -> tuple[int, int, int, int]:
    """(k0, k1, c2, c3): the Philox key words of ``seed`` and the counter's upper words for ``key`` and ``stream``."""
    check_seed_and_key(seed, key)
    return seed & MASK_32, seed >> 32, key & MASK_32, (key >> 32) | (stream << 31)


def check_distribution(distribution: str) -> None:
    check_choice(distribution, Distribution, "distribution")


# ---------------------------------------------------------------------------------------------- torch reference


def _mulhilo(x: Tensor, multiplier: int) -> tuple[Tensor, Tensor]:
    """(high, low) 32-bit words of x·multiplier for x in [0, 2³²) (int64), without overflowing int64."""
    high_half, low_half = x >> 16, x & 0xFFFF
    product_low = low_half * multiplier  # < 2**48
    product_high = high_half * multiplier  # < 2**48
    high = (product_high + (product_low >> 16)) >> 16
    low = (((product_high & 0xFFFF) << 16) + product_low) & MASK_32
    return high, low


def philox4x32(counter: tuple[Tensor, Tensor, Tensor, Tensor], k0: int, k1: int) -> tuple[Tensor, ...]:
    """Philox4x32-10 on int64 tensors holding 32-bit words; the torch reference of every kernel."""
    c0, c1, c2, c3 = counter
    for _ in range(PHILOX_ROUNDS):
        high_0, low_0 = _mulhilo(c0, PHILOX_M0)
        high_1, low_1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = high_1 ^ c1 ^ k0, low_1, high_0 ^ c3 ^ k1, low_0
        k0, k1 = (k0 + PHILOX_W0) & MASK_32, (k1 + PHILOX_W1) & MASK_32
    return c0, c1, c2, c3


def _as_float32(bits: Tensor) -> Tensor:
    """float32 with the given 32-bit patterns (int64 tensor of values in [0, 2³²))."""
    return torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)


def _float32_bits(value: Tensor) -> Tensor:
    return value.view(torch.int32).to(torch.int64) & MASK_32


def _neg2log(word: Tensor) -> Tensor:
    """−2·ln(u), u = ((word div 2⁸) + 1)·2⁻²⁴, by Cephes' logf on the float32 (k + 1)."""
    k = ((word >> 8) + 1).to(torch.float32)  # exact: at most 2**24
    bits = _float32_bits(k)
    exponent = (bits >> 23) - 150  # k + 1 = m·2^(e + 24), m ∈ [0.5, 1)
    mantissa = _as_float32((bits & 0x7FFFFF) | 0x3F000000)
    low = mantissa < LOG_SQRTHF
    exponent = exponent - low.to(torch.int64)
    x = torch.where(low, mantissa + mantissa - 1.0, mantissa - 1.0)
    z = x * x
    y = torch.full_like(x, LOG_POLY[0])
    for coefficient in LOG_POLY[1:]:
        y = y * x + coefficient
    y = y * x * z
    fe = exponent.to(torch.float32)
    y = y + LOG_LN2_LO * fe
    y = y - 0.5 * z
    result = x + y
    result = result + LOG_LN2_HI * fe
    return result * -2.0


def _sqrt(value: Tensor) -> Tensor:
    """The correctly rounded float32 square root (torch's own float32 ``sqrt`` on CPU is not: it differs from
    IEEE's in about one value in six by 1 ulp). A float64 root rounded to float32 is exact: a float32's root never
    lies within 2⁻⁵⁰ (relative) of a float32 rounding boundary."""
    return value.double().sqrt().float()


def _cos_sin(word: Tensor) -> tuple[Tensor, Tensor]:
    """(cos φ, sin φ), φ = 2π·word/2³²: quadrant from the top bits, Cephes' sinf/cosf on [−π/4, π/4)."""
    shifted = (word + 0x20000000) & MASK_32
    quadrant = shifted >> 30
    t = (((shifted & 0x3FFFFFFF) >> 6) - (1 << 23)).to(torch.float32) * ANGLE_STEP  # exact integer, one rounding
    z = t * t
    s = ((z * SIN_POLY[0] + SIN_POLY[1]) * z + SIN_POLY[2]) * z * t + t
    c = ((z * COS_POLY[0] + COS_POLY[1]) * z + COS_POLY[2]) * z * z - 0.5 * z + 1.0
    cos = torch.where(quadrant == 0, c, torch.where(quadrant == 1, -s, torch.where(quadrant == 2, -c, s)))
    sin = torch.where(quadrant == 0, s, torch.where(quadrant == 1, c, torch.where(quadrant == 2, -s, -c)))
    return cos, sin


def _reference_blocks(
    first_block: int, blocks: int, words: tuple[int, int, int, int], distribution: str, device: torch.device
) -> Tensor:
    """The values of whole blocks ``first_block …`` (flattened, float32) by the torch reference."""
    k0, k1, c2, c3 = words
    index = torch.arange(first_block, first_block + blocks, dtype=torch.int64, device=device)
    counter = (index & MASK_32, index >> 32, torch.full_like(index, c2), torch.full_like(index, c3))
    x0, x1, x2, x3 = philox4x32(counter, k0, k1)
    if distribution == "gaussian":
        radius_0, radius_1 = _sqrt(_neg2log(x0)), _sqrt(_neg2log(x2))
        cos_0, sin_0 = _cos_sin(x1)
        cos_1, sin_1 = _cos_sin(x3)
        return torch.stack([radius_0 * cos_0, radius_0 * sin_0, radius_1 * cos_1, radius_1 * sin_1], dim=1).view(-1)
    if distribution == "rademacher":
        bits = torch.arange(32, dtype=torch.int64, device=device)
        word = torch.stack([x0, x1, x2, x3], dim=1)  # (blocks, 4)
        set_bits = (word.unsqueeze(-1) >> bits) & 1  # (blocks, 4, 32): element 32·w + j of the block
        return (1 - 2 * set_bits).to(torch.float32).view(-1)
    # uniforms
    return (torch.stack([x0, x1, x2, x3], dim=1) >> 8).to(torch.float32).mul_(TWO_POW_M24).view(-1)


_REFERENCE_CHUNK = 1 << 20  # elements per reference pass (bounds the int64 temporaries)


def reference_values(
    words: tuple[int, int, int, int], offset: int, numel: int, distribution: str, device: torch.device | str = "cpu"
) -> Tensor:
    """Elements ``offset … offset + numel − 1`` (float32, 1-D) of the stream ``words`` by the torch reference;
    ``distribution`` is ``gaussian``, ``rademacher`` or ``uniform``."""
    device = torch.device(device)
    block = RADEMACHER_BLOCK if distribution == "rademacher" else GAUSSIAN_BLOCK
    out = torch.empty(numel, dtype=torch.float32, device=device)
    for start in range(0, numel, _REFERENCE_CHUNK):
        stop = min(numel, start + _REFERENCE_CHUNK)
        first, last = (offset + start) // block, (offset + stop - 1) // block
        values = _reference_blocks(first, last - first + 1, words, distribution, device)
        skip = offset + start - first * block
        out[start:stop] = values[skip : skip + stop - start]
    return out


def _reference_round(value: Tensor, dtype: torch.dtype, rounding: str, uniforms: Tensor | None) -> Tensor:
    """``value`` (float32) written in ``dtype`` to nearest, or stochastically with ``uniforms`` ∈ [0, 1)."""
    nearest = value.to(dtype)
    if rounding == "nearest" or dtype in (torch.float32, torch.float64):
        return nearest
    assert uniforms is not None
    error = value - nearest.float()
    toward = torch.where(error >= 0, torch.inf, -torch.inf).to(dtype)
    neighbour = torch.nextafter(nearest, toward)
    gap = neighbour.float() - nearest.float()
    probability = torch.where(gap != 0, error / gap, torch.zeros_like(error)).nan_to_num_(0.0)
    return torch.where(uniforms < probability, neighbour, nearest)


def reference_fused_(
    param: Tensor,
    words: tuple[int, int, int, int],
    rounding_words: tuple[int, int, int, int] | None,
    offset: int,
    distribution: str,
    mode: int,
    pre: float,
    decay: float,
    alpha: float,
    rounding: str,
) -> Tensor:
    """The torch reference of the fused kernels on a contiguous ``param`` (elements ``offset …``), in place.

    ``mode`` 1: θ ← θ + pre·z. ``mode`` 2: θ ← (θ + pre·z)·decay + alpha·z. The coefficients are rounded to float32
    and every operation is one float32 operation (no fused multiply–add); the result is rounded once into θ's dtype.
    float64 weights are moved in float64 (with the float32 z and float64 coefficients).
    """
    flat = param.view(-1)
    numel = flat.numel()
    wide = torch.float64 if param.dtype == torch.float64 else torch.float32
    cast = (lambda v: v) if wide == torch.float64 else _f32
    pre_t, decay_t, alpha_t = (torch.tensor(cast(c), dtype=wide, device=param.device) for c in (pre, decay, alpha))
    for start in range(0, numel, _REFERENCE_CHUNK):
        stop = min(numel, start + _REFERENCE_CHUNK)
        z = reference_values(words, offset + start, stop - start, distribution, param.device).to(wide)
        value = flat[start:stop].to(wide) + pre_t * z
        if mode == 2:
            value = value * decay_t + alpha_t * z
        uniforms = None
        if rounding == "stochastic" and param.dtype not in (torch.float32, torch.float64):
            assert rounding_words is not None
            uniforms = reference_values(rounding_words, offset + start, stop - start, "uniform", param.device)
        flat[start:stop] = _reference_round(value, param.dtype, rounding, uniforms)
    return param


# ---------------------------------------------------------------------------------------------- backends
