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
numba kernels for CPU tensors (:mod:`zolightning.functional.numba_noise`: vectorised, a large tensor's chunks on the
executor a block lends, :func:`~zolightning.functional.chunk_executor.chunks_drawn_on`; the result does not depend on
the thread count) and Triton kernels for GPU tensors (:mod:`zolightning.functional.triton_noise`). numba is a
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
import threading
import warnings
from types import ModuleType

import torch
from torch import Tensor

from zolightning.functional.checks import check_choice
from zolightning.functional.chunk_executor import chunk_executor
from zolightning.functional.counter_philox import (  # noqa: F401  (re-exported: the scheme's public names)
    GAUSSIAN_BLOCK, RADEMACHER_BLOCK, SCHEME_VERSION, STREAM_DIRECTION, STREAM_ROUNDING, Backend, Distribution,
    Rounding, check_distribution, check_seed_and_key, philox4x32, philox_words, reference_fused_, reference_values,
)

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


def _lent(backend: str) -> tuple:
    """The numba kernels' last argument: the executor lent to the block (the engine's noise workers), if any."""
    return (chunk_executor(),) if backend == "numba" else ()


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

    The engine's z of a tensor named ``name`` at step seed ``s`` (``zo.noise: counter``) is
    ``counter_noise(tensor_seed(s, stable_key(name)), 0, 0, numel)`` reshaped to the tensor's shape (a shard of it: the
    same call from the shard's first index), and a masked direction's values are the first ``mask.sum()`` elements.

    Args:
        seed: the stream's seed, in [0, 2⁶⁴): the engine's is :func:`~zolightning.functional.noise.tensor_seed`.
        key: a second index of independent streams under one seed, in [0, 2⁶³); 0 in the engine's directions.
        offset: the index of the first element.
        numel: how many elements.
        distribution: ``gaussian`` (N(0, 1)) or ``rademacher`` (±1 with equal probability).
        device: where the values are computed and returned.
        dtype: the values are computed in float32 and cast to this dtype (rounded to nearest).
        backend: ``auto`` (numba on CPU, Triton on CUDA, else the torch reference), or one of them by name.
    """
    if numel < 0:
        raise ValueError(f"`numel` must be non-negative, got {numel}.")
    out = torch.empty(numel, dtype=torch.float32, device=torch.device(device))
    fill_counter_noise_(out, seed, key, offset, distribution=distribution, backend=backend)
    return out if dtype == torch.float32 else out.to(dtype)


def fill_counter_noise_(
    out: Tensor,
    seed: int,
    key: int,
    offset: int = 0,
    *,
    distribution: Distribution = "gaussian",
    backend: Backend = "auto",
) -> Tensor:
    """Write ``counter_noise(seed, key, offset, out.numel(), distribution)`` into ``out`` in place (any shape, in its
    row-major order; computed in float32 and rounded to nearest into ``out``'s dtype). Returns ``out``."""
    check_distribution(distribution)
    _check_offset(offset, out.numel())
    words = philox_words(seed, key)
    chosen = _backend_for(out.device, torch.float32, backend)
    direct = out.dtype == torch.float32 and out.is_contiguous()
    work = out if direct else torch.empty(out.shape, dtype=torch.float32, device=out.device)
    with torch.no_grad():
        if chosen == "torch" or work.numel() == 0:
            work.view(-1).copy_(reference_values(words, offset, work.numel(), distribution, work.device))
        else:
            kernels = numba_kernels() if chosen == "numba" else triton_kernels()
            assert kernels is not None
            kernels.fused_(work.view(-1), words, None, offset, distribution, 0, 0.0, 1.0, 0.0, "nearest",
                           *_lent(chosen))
        if not direct:
            out.copy_(work)
    return out


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
                kernels.fused_(work, words, rounding_words, offset, distribution, mode, pre, decay, alpha, rounding,
                               *_lent(chosen))
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
