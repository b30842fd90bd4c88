"""Counter-based noise: z[i] is a pure function of (seed, key, i), and fused in-place moves along it.

:mod:`zolightning.functional.noise` draws each tensor's z from a ``torch.Generator`` into a buffer, then adds the buffer
to θ: a noise draw plus three memory passes per move, and the draw dominates. Here every element's value is computed
from its own index, so any slice of a tensor (a shard, a block, a chunk) is generated alone and gives the same numbers
as the whole, the kernels generate z in registers (one read and one write of θ, no buffer), and no thread count,
chunking or device changes a value.

The scheme (version 1; any change to it changes every direction, so it is versioned and tested against fixed values):

* **Generator.** Philox4x32-10 (Salmon et al., SC'11; the generator of cuRAND and of Triton's ``tl.randint4x``): a
  128-bit counter (c0, c1, c2, c3) and a 64-bit key (k0, k1) give four 32-bit words.
* **Key** = the seed: k0 = seed mod 2³², k1 = seed div 2³² (``seed`` in [0, 2⁶⁴): the step seed of
  :func:`~zolightning.functional.noise.step_seed`, or any seed the caller mixes).
* **Counter** = (block index mod 2³², block index div 2³², tensor key mod 2³², tensor key div 2³² + stream·2³¹),
  with the tensor key in [0, 2⁶³) (:func:`~zolightning.functional.noise.stable_key` gives 63-bit keys) and the
  stream 0 for directions, 1 for the uniforms of stochastic rounding. The block of element i is i div 4 (Gaussian,
  uniforms) or i div 128 (Rademacher).
* **Gaussian.** Block b = i div 4 gives words (x0, x1, x2, x3); the pairs (x0, x1) and (x2, x3) each give two normals
  by Box–Muller, R·cos φ for the even element and R·sin φ for the odd one: R = √(−2 ln u) with
  u = ((x div 2⁸) + 1)·2⁻²⁴ ∈ (0, 1] (24 exact bits, so |z| ≤ 5.77), φ = 2π·x'/2³² (x' the second word, 26 bits
  used). ln, sin and cos are Cephes' single-precision polynomials (about 1 ulp), written with +, ×, √ and bit
  operations only, every operation rounded to float32 (no fused multiply–add): the torch reference, the numba
  kernels and the Triton kernels compute the same float32 values.
* **Rademacher.** Element i is +1 or −1 by bit (i mod 32) of word (i div 32) mod 4 of block i div 128 (−1 when set).
* **Uniforms** (stochastic rounding): element i is (x div 2⁸)·2⁻²⁴ ∈ [0, 1), x the word i mod 4 of block i div 4 of
  stream 1.

Three implementations: a pure-torch reference (int64 tensor arithmetic masked to 32 bits; exact on any device, slow),
numba kernels for CPU tensors (:mod:`zolightning.functional.numba_noise`: parallel, vectorised, the result does not
depend on the thread count) and Triton kernels for GPU tensors (:mod:`zolightning.functional.triton_noise`). numba is a
dependency; where it cannot be imported a warning says so once and the torch reference is used. Triton is optional
(``pip install zolightning[gpu]``); without it GPU tensors use the torch reference.

The fused moves (:func:`add_counter_noise_`, :func:`counter_sgd_update_`) compute in float32 from θ read once and
write θ once. Low-precision weights (bf16, fp16) are read and widened exactly, moved in float32 with the fp32 z, and
rounded once on the write: to nearest (ties to even), or stochastically (up with probability equal to the fraction of
the gap, as :func:`~zolightning.functional.rounding.round_stochastic_`) with uniforms from stream 1, so the rounding
is reproducible and slice-invariant too.
"""

from __future__ import annotations

import importlib
import math
import struct
import threading
import warnings
from types import ModuleType
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

_lock = threading.Lock()
_modules: dict[str, ModuleType | None] = {}


def _load(name: str) -> ModuleType | None:
    with _lock:
        if name not in _modules:
            try:
                # import_module, not `from package import …`: the package attribute outlives a failed import.
                _modules[name] = importlib.import_module(f"zolightning.functional.{name}_noise")
            except ImportError as error:  # the package itself, or a broken install of it
                _modules[name] = None
                if name == "numba":
                    warnings.warn(
                        f"numba cannot be imported ({error}): zolightning's counter-based noise runs on its pure-torch "
                        "reference on CPU, which gives the same values but is many times slower. "
                        "Install numba (`pip install numba`) for the fused CPU kernels.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                else:
                    warnings.warn(
                        f"triton cannot be imported ({error}): zolightning's counter-based noise on GPU tensors runs "
                        "on its pure-torch reference (same values, slower); `pip install zolightning[gpu]` adds it.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        return _modules[name]


def numba_kernels() -> ModuleType | None:
    """The numba kernel module, or ``None`` (after one warning) where numba cannot be imported."""
    return _load("numba")


def triton_kernels() -> ModuleType | None:
    """The Triton kernel module, or ``None`` (after one warning) where Triton cannot be imported."""
    return _load("triton")


def _triton_runs_on(device: torch.device) -> bool:
    import os

    return device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def _backend_for(device: torch.device, dtype: torch.dtype, backend: str) -> str:
    check_choice(backend, Backend, "backend")
    if dtype == torch.float64 and backend != "torch":
        if backend != "auto":
            raise ValueError(f"The {backend} kernels move float32, bfloat16 and float16 weights; float64 uses 'torch'.")
        return "torch"
    if backend == "auto":
        if device.type == "cpu":
            return "numba" if numba_kernels() is not None else "torch"
        if device.type == "cuda":
            return "triton" if triton_kernels() is not None else "torch"
        return "torch"
    if backend == "numba" and (device.type != "cpu" or numba_kernels() is None):
        raise ValueError(f"The numba kernels need numba and a CPU tensor (got a {device.type} tensor).")
    if backend == "triton" and (not _triton_runs_on(device) or triton_kernels() is None):
        raise ValueError(
            "The Triton kernels need triton and a CUDA tensor (or a CPU tensor with TRITON_INTERPRET=1, for tests)."
        )
    return backend


_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_offset(offset: int, numel: int) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"`offset` must be a non-negative integer, got {offset!r}.")
    if offset + numel >= 2**62:
        raise ValueError("offset + numel must be below 2**62.")


# ---------------------------------------------------------------------------------------------- public API


def counter_noise(
    seed: int,
    key: int,
    offset: int,
    numel: int,
    distribution: Distribution = "gaussian",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    backend: Backend = "auto",
) -> Tensor:
    """Elements ``offset … offset + numel − 1`` of the counter-based noise of ``(seed, key)``, as a 1-D tensor.

    Element i of a tensor's direction is element i of this sequence (in the tensor's row-major order), so
    ``counter_noise(seed, key, 0, n)`` is the whole direction of an n-element tensor and any slice of it equals
    ``counter_noise(seed, key, start, length)``, bitwise, on every device and backend (Triton within 2 ulp).

    Args:
        seed: the step's seed, in [0, 2⁶⁴) (:func:`~zolightning.functional.noise.step_seed`).
        key: the tensor's key, in [0, 2⁶³) (:func:`~zolightning.functional.noise.stable_key` of its name).
        offset: the index of the first element.
        numel: how many elements.
        distribution: ``gaussian`` (N(0, 1)) or ``rademacher`` (±1 with equal probability).
        device: where the values are computed and returned.
        dtype: the values are computed in float32 and cast to this dtype (rounded to nearest).
        backend: ``auto`` (numba on CPU, Triton on CUDA, else the torch reference), or one of them by name.
    """
    check_distribution(distribution)
    _check_offset(offset, numel)
    if numel < 0:
        raise ValueError(f"`numel` must be non-negative, got {numel}.")
    words = philox_words(seed, key)
    device = torch.device(device)
    chosen = _backend_for(device, torch.float32, backend)
    if chosen == "torch" or numel == 0:
        out = reference_values(words, offset, numel, distribution, device)
    else:
        out = torch.empty(numel, dtype=torch.float32, device=device)
        kernels = numba_kernels() if chosen == "numba" else triton_kernels()
        assert kernels is not None
        kernels.fused_(out, words, None, offset, distribution, 0, 0.0, 1.0, 0.0, "nearest")
    return out if dtype == torch.float32 else out.to(dtype)


def _run_fused(
    param: Tensor,
    seed: int,
    key: int,
    offset: int,
    distribution: str,
    mode: int,
    pre: float,
    decay: float,
    alpha: float,
    rounding: str,
    rounding_seed: int | None,
    backend: str,
) -> Tensor:
    check_distribution(distribution)
    check_choice(rounding, Rounding, "rounding")
    _check_offset(offset, param.numel())
    if not param.is_floating_point():
        raise ValueError(f"Only floating-point tensors can be moved, got {param.dtype}.")
    words = philox_words(seed, key)
    rounding_words = philox_words(seed if rounding_seed is None else rounding_seed, key, STREAM_ROUNDING)
    chosen = _backend_for(param.device, param.dtype, backend)
    if chosen != "torch" and param.dtype not in _KERNEL_DTYPES:
        raise ValueError(f"The {chosen} kernels move float32, bfloat16 and float16 weights, got {param.dtype}.")
    with torch.no_grad():
        work = param if param.is_contiguous() else param.contiguous()
        if work.numel():
            if chosen == "torch":
                reference_fused_(work, words, rounding_words, offset, distribution, mode, pre, decay, alpha, rounding)
            else:
                kernels = numba_kernels() if chosen == "numba" else triton_kernels()
                assert kernels is not None
                kernels.fused_(work, words, rounding_words, offset, distribution, mode, pre, decay, alpha, rounding)
        if work is not param:
            param.copy_(work)
    return param


def add_counter_noise_(
    param: Tensor,
    alpha: float,
    seed: int,
    key: int,
    *,
    offset: int = 0,
    distribution: Distribution = "gaussian",
    rounding: Rounding = "nearest",
    rounding_seed: int | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """θ ← θ + alpha·z in place, z = ``counter_noise(seed, key, offset, θ.numel())`` in θ's row-major order, generated
    in registers: one read and one write of θ. Returns ``param``.

    float32 θ: exactly ``θ + alpha·z`` with alpha rounded to float32 and no fused multiply–add (two float32 roundings).
    bf16/fp16 θ: computed in float32 from θ widened exactly, rounded once into θ's dtype by ``rounding``
    (``nearest``: ties to even; ``stochastic``: unbiased, with uniforms of stream 1 seeded by ``rounding_seed``,
    ``seed`` by default; give each move of a step its own rounding seed when the roundings must be independent).
    ``offset`` places θ inside a larger tensor (a shard: its first element's index in the whole).
    """
    return _run_fused(param, seed, key, offset, distribution, 1, alpha, 1.0, 0.0, rounding, rounding_seed, backend)


def counter_sgd_update_(
    param: Tensor,
    seed: int,
    key: int,
    projected_gradient: float,
    *,
    lr: float,
    weight_decay: float = 0.0,
    restore: float = 0.0,
    offset: int = 0,
    distribution: Distribution = "gaussian",
    rounding: Rounding = "nearest",
    rounding_seed: int | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """The ZO-SGD update of :func:`~zolightning.functional.sgd.zo_sgd_update_` (no momentum) fused with the restore,
    in one pass: θ ← (θ + restore·z)·(1 − lr·λ) − (lr·g)·z, z as in :func:`add_counter_noise_`.

    ``restore`` brings θ back from the last perturbation first, in units of z (−offset·ε after a move to
    θ + offset·εz); 0 when θ is already at the centre. Every operation is one float32 operation on float32
    coefficients (1 − lr·λ and −lr·g are formed in double precision, then rounded), and the result is rounded once as
    in :func:`add_counter_noise_`. Differs from the unfused ``param.add_(z, alpha=…)`` by at most 1 ulp per operation
    where torch fuses the multiply–add.
    """
    decay = 1.0 - lr * weight_decay
    alpha = -lr * projected_gradient
    return _run_fused(param, seed, key, offset, distribution, 2, restore, decay, alpha, rounding, rounding_seed,
                      backend)


def available_backends() -> dict[str, bool]:
    """Which kernels can run here: ``{"torch": True, "numba": …, "triton": …}`` (imports them; warns once if not)."""
    return {"torch": True, "numba": numba_kernels() is not None, "triton": triton_kernels() is not None}
