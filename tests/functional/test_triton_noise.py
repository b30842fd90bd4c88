"""The Triton kernels of the counter-based noise, run on CPU by Triton's interpreter (TRITON_INTERPRET=1), against
the numba CPU kernels: the same z and the same moved weights, to within 2 ulp of float32 (issue 24)."""

from __future__ import annotations

import importlib

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (it comes with `pip install -e .[test]` or [gpu])")
pytest.importorskip("numba", reason="numba is not installed: there is no CPU kernel to compare with")

from zolightning.functional import counter_noise as cn  # noqa: E402
from zolightning.functional.counter_noise import add_counter_noise_, counter_noise, counter_sgd_update_  # noqa: E402
from zolightning.functional.noise import stable_key, step_seed  # noqa: E402

SEED = step_seed(11, 5)
_kernels = _triton_philox = None
KEY = stable_key("model.layers.3.mlp.down_proj.weight")


@pytest.fixture(scope="module")
def interpreted():
    """The Triton kernel module with its kernels built for the interpreter (``triton.jit`` reads TRITON_INTERPRET
    when a kernel is defined), rebuilt as it was afterwards so that a GPU run later in the session is unaffected."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        module = importlib.reload(importlib.import_module("zolightning.functional.triton_noise"))
        patch.setitem(cn._modules, "triton", module)
        yield module
    importlib.reload(module)


def ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """The largest distance in units in the last place between two float32 tensors (NaN-free)."""

    def ordered(t: torch.Tensor) -> torch.Tensor:
        i = t.view(torch.int32).long()
        return torch.where(i < 0, -(i & 0x7FFFFFFF), i)

    return int((ordered(a) - ordered(b)).abs().max()) if a.numel() else 0


def test_the_triton_philox_is_tritons_own(interpreted):
    """Our Philox against Triton's own ``philox_impl`` (the generator behind ``tl.philox`` and ``tl.randint4x``)."""
    import triton
    import triton.language as tl
    from triton.language import random
    from triton.runtime.interpreter import InterpretedFunction

    global _kernels, _triton_philox  # a @jit function reads module globals, not the test's locals
    _kernels = interpreted
    # Triton's library was built when triton was first imported (here, without the interpreter): interpret its
    # function body now (it calls builtins only).
    impl = random.philox_impl
    _triton_philox = impl if isinstance(impl, InterpretedFunction) else InterpretedFunction(impl.fn)

    @triton.jit
    def both(out_ptr, seed, c2, c3, N: tl.constexpr):
        i = tl.arange(0, N)
        c0 = i.to(tl.uint32)
        zero = c0 * 0
        seed64 = tl.full([N], seed, tl.uint64)
        k0, k1 = (seed64 & 0xFFFFFFFF).to(tl.uint32), (seed64 >> 32).to(tl.uint32)  # as tl.philox splits the seed
        theirs = _triton_philox(c0, zero, zero + c2, zero + c3, k0, k1)
        ours = _kernels._philox(c0, zero, zero + c2, zero + c3, k0, k1)
        for w in tl.static_range(4):
            tl.store(out_ptr + w * N + i, theirs[w].to(tl.int32, bitcast=True))
            tl.store(out_ptr + (4 + w) * N + i, ours[w].to(tl.int32, bitcast=True))

    out = torch.empty(8, 64, dtype=torch.int32)
    both[(1,)](out, SEED, 12345, 678, N=64)
    assert torch.equal(out[:4], out[4:])
    k0, k1, c2, c3 = SEED & 0xFFFFFFFF, SEED >> 32, 12345, 678
    index = torch.arange(64, dtype=torch.int64)
    reference = cn.philox4x32((index, index * 0, index * 0 + c2, index * 0 + c3), k0, k1)
    assert all(torch.equal(out[w].long() & 0xFFFFFFFF, reference[w]) for w in range(4))


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_interpreted_triton_noise_matches_the_cpu_kernel(interpreted, distribution):
    for offset, numel in [(0, 1), (3, 6), (0, 1_024), (5, 2_500), (130, 1_100), (1 << 40, 700)]:
        triton_z = counter_noise(SEED, KEY, offset, numel, distribution, backend="triton")
        numba_z = counter_noise(SEED, KEY, offset, numel, distribution, backend="numba")
        assert ulps(triton_z, numba_z) <= 2, (offset, numel)


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_interpreted_triton_slices_give_the_whole(interpreted, distribution):
    whole = counter_noise(SEED, KEY, 7, 3_001, distribution, backend="triton")
    cuts = [0, 5, 1_000, 1_029, 3_001]
    parts = [
        counter_noise(SEED, KEY, 7 + a, b - a, distribution, backend="triton")
        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
    ]
    assert torch.equal(torch.cat(parts).view(torch.int32), whole.view(torch.int32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_interpreted_triton_fused_moves_match_the_cpu_kernel(interpreted, dtype, distribution, rounding):
    theta = (torch.randn(1_500, generator=torch.Generator().manual_seed(0)) * 0.05).to(dtype)
    moved = {}
    for backend in ("triton", "numba"):
        moved[backend] = counter_sgd_update_(
            theta.clone(), SEED, KEY, 0.7, lr=1e-2, weight_decay=0.1, restore=-1e-3, offset=5,
            distribution=distribution, rounding=rounding, rounding_seed=99, backend=backend,
        )
        add_counter_noise_(moved[backend], 3e-3, SEED, KEY, offset=5, distribution=distribution, rounding=rounding,
                           rounding_seed=98, backend=backend)
    if dtype == torch.float32:
        assert ulps(moved["triton"], moved["numba"]) <= 2
    else:  # 2 ulp of float32 may tip a rounding: at most one 16-bit step apart
        steps = (moved["triton"].view(torch.int16).long() - moved["numba"].view(torch.int16).long()).abs()
        assert int(steps.max()) <= 1
