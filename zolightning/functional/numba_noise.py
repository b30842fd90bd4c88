"""numba CPU kernels of the counter-based noise (:mod:`zolightning.functional.counter_noise` defines the scheme).

Every element's value is a pure function of its index, and the kernels compute exactly the operations of the torch
reference (float32, no fused multiply–add: numba compiles without ``fastmath``), so they agree with it bitwise. A
large tensor is cut into fixed chunks that the threads of a lent executor take in any order (the engine's noise
workers: numba's own threading layer is not used, so no thread of its own spins between calls), and the result does
not depend on the thread count either. The loops are written without branches (selects and bit operations) so that LLVM vectorises
them: Philox's 32×32→64-bit products become ``vpmuludq`` and the polynomials run on 8 or 16 lanes.

Importing this module imports numba (and fails where numba cannot be imported; the caller falls back to the torch
reference). Kernels are compiled on first use and cached on disk (``cache=True``: about 20 s once per machine and
numba version), and release the GIL (``nogil=True``), so that worker threads can move different tensors at once.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
import torch
from numba import njit

from zolightning.functional import counter_philox as spec
from zolightning.functional.numba_scheme import (  # noqa: F401  (U and F: the kernels' argument types, for callers)
    _1, _2, _3, _32, _M32, _ONE, _ZERO, F, U, _combine, _gauss4, _half_to_float, _philox, _pick, _round_half, _uniform,
)

# ---------------------------------------------------------------------------------------------- serial range kernels
# Each moves elements j0 ≤ j < j1 of a flat array whose element j has the global index offset + j.


@njit(cache=True, nogil=True)
def gaussian_f32(theta, j0, j1, offset, k0, k1, c2, c3, mode, pre, decay, alpha):
    g0, g1 = offset + j0, offset + j1
    first, last = (g0 + 3) >> 2, g1 >> 2  # the whole blocks inside [g0, g1)
    if first >= last:
        first = last = g1 >> 2
    for g in range(g0, min(g1, first << 2)):  # head
        y0, y1, y2, y3 = _gauss4(k0, k1, c2, c3, U(g >> 2))
        z = _pick(y0, y1, y2, y3, g & 3)
        theta[g - offset] = _combine(theta[g - offset], z, mode, pre, decay, alpha)
    for b in range(first, last):
        z0, z1, z2, z3 = _gauss4(k0, k1, c2, c3, U(b))
        j = U((b << 2) - offset)  # unsigned indices: no negative-index wraparound branch, so LLVM vectorises
        theta[j] = _combine(theta[j], z0, mode, pre, decay, alpha)
        theta[j + _1] = _combine(theta[j + _1], z1, mode, pre, decay, alpha)
        theta[j + _2] = _combine(theta[j + _2], z2, mode, pre, decay, alpha)
        theta[j + _3] = _combine(theta[j + _3], z3, mode, pre, decay, alpha)
    for g in range(max(g0, last << 2), g1):  # tail
        y0, y1, y2, y3 = _gauss4(k0, k1, c2, c3, U(g >> 2))
        z = _pick(y0, y1, y2, y3, g & 3)
        theta[g - offset] = _combine(theta[g - offset], z, mode, pre, decay, alpha)


@njit(inline="always")
def _rademacher_word(theta, j, word, mode, pre, decay, alpha):
    """Elements j … j + 31 from the bits of ``word`` (−1 where set)."""
    for e in range(32):
        z = _ONE - F(np.int64((word >> U(e)) & _1)) * F(2.0)
        theta[j + U(e)] = _combine(theta[j + U(e)], z, mode, pre, decay, alpha)


@njit(inline="always")
def _rademacher_value(k0, k1, c2, c3, g):
    x0, x1, x2, x3 = _philox(U(g >> 7) & _M32, U(g >> 7) >> _32, c2, c3, k0, k1)
    word = _pick(x0, x1, x2, x3, (g >> 5) & 3)
    return _ONE - F(np.int64((word >> U(g & 31)) & _1)) * F(2.0)


@njit(cache=True, nogil=True)
def rademacher_f32(theta, j0, j1, offset, k0, k1, c2, c3, mode, pre, decay, alpha):
    g0, g1 = offset + j0, offset + j1
    first, last = (g0 + 127) >> 7, g1 >> 7
    if first >= last:
        first = last = g1 >> 7
    for g in range(g0, min(g1, first << 7)):
        theta[g - offset] = _combine(theta[g - offset], _rademacher_value(k0, k1, c2, c3, g), mode, pre, decay, alpha)
    for b in range(first, last):
        x0, x1, x2, x3 = _philox(U(b) & _M32, U(b) >> _32, c2, c3, k0, k1)
        j = U((b << 7) - offset)
        _rademacher_word(theta, j, x0, mode, pre, decay, alpha)
        _rademacher_word(theta, j + U(32), x1, mode, pre, decay, alpha)
        _rademacher_word(theta, j + U(64), x2, mode, pre, decay, alpha)
        _rademacher_word(theta, j + U(96), x3, mode, pre, decay, alpha)
    for g in range(max(g0, last << 7), g1):
        theta[g - offset] = _combine(theta[g - offset], _rademacher_value(k0, k1, c2, c3, g), mode, pre, decay, alpha)


@njit(inline="always")
def _half_move(theta, j, z, uniform, mode, pre, decay, alpha, fmt, stochastic):
    """Element j of bf16/fp16 bits: widen exactly, move in float32, round once."""
    value = _combine(_half_to_float(U(theta[j]), fmt), z, mode, pre, decay, alpha)
    theta[j] = _round_half(value, uniform, fmt, stochastic)


@njit(cache=True, nogil=True)
def _half_element(theta, g, offset, gaussian, k0, k1, c2, c3, r0, r1, r2, r3, mode, pre, decay, alpha, fmt,
                  stochastic):
    """One element by its global index g (the ragged head and tail of a range; not inlined, to keep compiling
    short)."""
    if gaussian:
        y0, y1, y2, y3 = _gauss4(k0, k1, c2, c3, U(g >> 2))
        z = _pick(y0, y1, y2, y3, g & 3)
    else:
        z = _rademacher_value(k0, k1, c2, c3, g)
    uniform = _ZERO
    if stochastic:
        u0, u1, u2, u3 = _philox(U(g >> 2) & _M32, U(g >> 2) >> _32, r2, r3, r0, r1)
        uniform = _uniform(_pick(u0, u1, u2, u3, g & 3))
    _half_move(theta, U(g - offset), z, uniform, mode, pre, decay, alpha, fmt, stochastic)


@njit(cache=True, nogil=True)
def gaussian_half(theta, j0, j1, offset, k0, k1, c2, c3, r0, r1, r2, r3, mode, pre, decay, alpha, fmt, stochastic):
    """bf16/fp16 weights as uint16 bits: widen exactly, move in float32, round once (to nearest, or stochastically
    with the uniforms of stream r*): whole blocks in the main loop, single elements at the ragged ends."""
    g0, g1 = offset + j0, offset + j1
    first, last = (g0 + 3) >> 2, g1 >> 2
    if first >= last:
        first = last = g1 >> 2
    for g in range(g0, min(g1, first << 2)):
        _half_element(theta, g, offset, True, k0, k1, c2, c3, r0, r1, r2, r3, mode, pre, decay, alpha, fmt,
                      stochastic)
    for b in range(first, last):
        z0, z1, z2, z3 = _gauss4(k0, k1, c2, c3, U(b))
        u0 = u1 = u2 = u3 = _ZERO
        if stochastic:
            y0, y1, y2, y3 = _philox(U(b) & _M32, U(b) >> _32, r2, r3, r0, r1)
            u0, u1, u2, u3 = _uniform(y0), _uniform(y1), _uniform(y2), _uniform(y3)
        j = U((b << 2) - offset)
        _half_move(theta, j, z0, u0, mode, pre, decay, alpha, fmt, stochastic)
        _half_move(theta, j + _1, z1, u1, mode, pre, decay, alpha, fmt, stochastic)
        _half_move(theta, j + _2, z2, u2, mode, pre, decay, alpha, fmt, stochastic)
        _half_move(theta, j + _3, z3, u3, mode, pre, decay, alpha, fmt, stochastic)
    for g in range(max(g0, last << 2), g1):
        _half_element(theta, g, offset, True, k0, k1, c2, c3, r0, r1, r2, r3, mode, pre, decay, alpha, fmt,
                      stochastic)


@njit(cache=True, nogil=True)
def rademacher_half(theta, j0, j1, offset, k0, k1, c2, c3, r0, r1, r2, r3, mode, pre, decay, alpha, fmt, stochastic):
    """As :func:`gaussian_half`, for Rademacher directions (blocks of 128, rounding uniforms in blocks of 4)."""
    g0, g1 = offset + j0, offset + j1
    first, last = (g0 + 127) >> 7, g1 >> 7
    if first >= last:
        first = last = g1 >> 7
    for g in range(g0, min(g1, first << 7)):
        _half_element(theta, g, offset, False, k0, k1, c2, c3, r0, r1, r2, r3, mode, pre, decay, alpha, fmt,
                      stochastic)
    for b in range(first, last):
        x0, x1, x2, x3 = _philox(U(b) & _M32, U(b) >> _32, c2, c3, k0, k1)
        base = U((b << 7) - offset)
        for q in range(32):  # the 4-element blocks of the rounding uniforms
            word = _pick(x0, x1, x2, x3, q >> 3)
            shift = U((q << 2) & 31)
            u0 = u1 = u2 = u3 = _ZERO
            if stochastic:
                quad = U((b << 5) + q)
                y0, y1, y2, y3 = _philox(quad & _M32, quad >> _32, r2, r3, r0, r1)
                u0, u1, u2, u3 = _uniform(y0), _uniform(y1), _uniform(y2), _uniform(y3)
            j = base + U(q << 2)
            z0 = _ONE - F(np.int64((word >> shift) & _1)) * F(2.0)
            z1 = _ONE - F(np.int64((word >> (shift + _1)) & _1)) * F(2.0)
            z2 = _ONE - F(np.int64((word >> (shift + _2)) & _1)) * F(2.0)
            z3 = _ONE - F(np.int64((word >> (shift + _3)) & _1)) * F(2.0)
            _half_move(theta, j, z0, u0, mode, pre, decay, alpha, fmt, stochastic)
            _half_move(theta, j + _1, z1, u1, mode, pre, decay, alpha, fmt, stochastic)
            _half_move(theta, j + _2, z2, u2, mode, pre, decay, alpha, fmt, stochastic)
            _half_move(theta, j + _3, z3, u3, mode, pre, decay, alpha, fmt, stochastic)
    for g in range(max(g0, last << 7), g1):
        _half_element(theta, g, offset, False, k0, k1, c2, c3, r0, r1, r2, r3, mode, pre, decay, alpha, fmt,
                      stochastic)


# ---------------------------------------------------------------------------------------------- chunking

CHUNK = 1 << 18  # elements per task on a lent executor (a multiple of 128: interior chunks start on whole blocks)
PARALLEL_MIN = 1 << 19  # below this, the calling thread alone (a task costs tens of microseconds)
_FORMATS = {torch.bfloat16: 1, torch.float16: 2}


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
    executor: Executor | None = None,
) -> torch.Tensor:
    """Run the kernel for ``mode`` (0: write z, 1: add, 2: update) on a contiguous CPU tensor, in place: on the
    calling thread, or, from :data:`PARALLEL_MIN` elements, in chunks of :data:`CHUNK` on ``executor`` (the kernels
    release the GIL). Each element's value depends on its index alone, so not on the chunking."""
    flat = param.detach().view(-1)
    n = flat.numel()
    k0, k1, c2, c3 = (U(w) for w in words)
    coefficients = (np.int64(mode), F(spec._f32(pre)), F(spec._f32(decay)), F(spec._f32(alpha)))
    if param.dtype == torch.float32:
        array = flat.numpy()
        kernel = gaussian_f32 if distribution == "gaussian" else rademacher_f32
        tail: tuple = (np.int64(offset), k0, k1, c2, c3, *coefficients)
    else:
        array = flat.view(torch.uint16).numpy()
        r0, r1, r2, r3 = (U(w) for w in (rounding_words or (0, 0, 0, 0)))
        kernel = gaussian_half if distribution == "gaussian" else rademacher_half
        tail = (np.int64(offset), k0, k1, c2, c3, r0, r1, r2, r3, *coefficients, np.int64(_FORMATS[param.dtype]),
                rounding == "stochastic")
    if executor is None or n < PARALLEL_MIN:
        kernel(array, np.int64(0), np.int64(n), *tail)
        return param
    futures = [executor.submit(kernel, array, np.int64(start), np.int64(min(n, start + CHUNK)), *tail)
               for start in range(0, n, CHUNK)]
    for future in futures:
        future.result()
    return param
