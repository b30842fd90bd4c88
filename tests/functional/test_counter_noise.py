"""Counter-based noise (issue 24): z[i] a pure function of (seed, key, i), three implementations that agree bitwise,
its statistics, and the fused in-place moves (float32 and half precision)."""

from __future__ import annotations

import math
import sys
import warnings

import pytest
import torch

from zolightning.functional import counter_noise as cn
from zolightning.functional.counter_noise import add_counter_noise_, counter_noise, counter_sgd_update_
from zolightning.functional.noise import stable_key, step_seed
from zolightning.functional.sgd import zo_sgd_update_

numba = pytest.importorskip("numba", reason="numba is not installed: the numba kernels cannot be compared")
from zolightning.functional import numba_noise  # noqa: E402

SEED = step_seed(7, 3)
KEY = stable_key("encoder.layer.0.attention.query.weight")
DISTRIBUTIONS = ("gaussian", "rademacher")


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16)


def assert_bitwise(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    mismatch = bits(a) != bits(b)
    assert not bool(mismatch.any()), f"{int(mismatch.sum())} of {a.numel()} differ, first at {mismatch.nonzero()[:3]}"


def ragged_cuts(total: int, pieces: int, generator: torch.Generator) -> list[int]:
    """``pieces − 1`` distinct random cut points in (0, total), sorted: ragged pieces, most not aligned to 4 or 128."""
    return sorted(torch.randperm(total - 1, generator=generator)[: pieces - 1].add(1).tolist())


# ---------------------------------------------------------------------------------------------- the generator


def test_philox_matches_the_random123_known_answers():
    """Philox4x32-10 itself: the known-answer vectors of Random123 (kat_vectors), through the torch reference."""
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for counter, key, expected in cases:
        words = cn.philox4x32(tuple(torch.tensor([c], dtype=torch.int64) for c in counter), *key)
        assert tuple(int(w) for w in words) == expected


def test_the_scheme_is_pinned_by_fixed_values():
    """Changing the scheme changes every direction (and every resumed run or replayed log): these bits must never
    move silently. Counter (0, 0, 0, 0), key (0, 0): the first Philox block of the KAT above."""
    assert cn.SCHEME_VERSION == 1
    pinned = [0x3F7DBB31, 0xBF6CB6B0, 0xBF1E1B9D, 0xBEF6D1AF, 0xBE1D5353, 0x3E392A68]  # 0.99114, -0.92466, …
    for backend in ("numba", "torch"):
        gaussian = counter_noise(0, 0, 0, 6, backend=backend)
        assert [int(b) & 0xFFFFFFFF for b in bits(gaussian)] == pinned
        rademacher = counter_noise(0, 0, 0, 8, "rademacher", backend=backend)
        assert rademacher.tolist() == [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, -1.0]  # bits of 0x6627E8D5, low first


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("pieces", [2, 3, 7])
def test_any_split_into_ragged_slices_gives_the_whole_bitwise(distribution, pieces):
    generator = torch.Generator().manual_seed(pieces)
    offset, total = 13, 20_011  # neither aligned to a 4-element nor to a 128-element block
    whole = counter_noise(SEED, KEY, offset, total, distribution)
    for backend in ("numba", "torch"):
        cuts = [0, *ragged_cuts(total, pieces, generator), total]
        parts = [
            counter_noise(SEED, KEY, offset + start, stop - start, distribution, backend=backend)
            for start, stop in zip(cuts[:-1], cuts[1:], strict=True)
        ]
        assert_bitwise(torch.cat(parts), whole)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_numba_kernels_equal_the_torch_reference_bitwise(distribution):
    for offset, numel in [(0, 1), (3, 2), (0, 4), (5, 1_000), (127, 130), (1 << 40, 333), (9, 300_007)]:
        assert_bitwise(
            counter_noise(SEED, KEY, offset, numel, distribution, backend="numba"),
            counter_noise(SEED, KEY, offset, numel, distribution, backend="torch"),
        )


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_the_thread_count_does_not_change_the_values(distribution):
    """The calling thread alone, and chunks taken by 1, 2 or 3 lent worker threads in any order, write the same bits."""
    from concurrent.futures import ThreadPoolExecutor

    from zolightning.functional.chunk_executor import chunks_drawn_on

    numel, offset = 3 * numba_noise.CHUNK + 77, 5
    theta = torch.randn(numel, generator=torch.Generator().manual_seed(3))
    serial = add_counter_noise_(theta.clone(), 0.3, SEED, KEY, offset=offset, distribution=distribution)
    for workers in (1, 2, 3):
        with ThreadPoolExecutor(workers) as pool, chunks_drawn_on(pool):
            chunked = add_counter_noise_(theta.clone(), 0.3, SEED, KEY, offset=offset, distribution=distribution)
            noise = counter_noise(SEED, KEY, offset, numel, distribution)
        assert_bitwise(chunked, serial)
        assert_bitwise(noise, counter_noise(SEED, KEY, offset, numel, distribution, backend="torch"))


def test_seeds_keys_and_streams_give_different_noise():
    base = counter_noise(SEED, KEY, 0, 64)
    assert not torch.equal(base, counter_noise(SEED + 1, KEY, 0, 64))
    assert not torch.equal(base, counter_noise(SEED, KEY + 1, 0, 64))
    assert not torch.equal(base, counter_noise(SEED, KEY, 1, 64))
    direction = cn.reference_values(cn.philox_words(SEED, KEY), 0, 64, "uniform")
    rounding = cn.reference_values(cn.philox_words(SEED, KEY, cn.STREAM_ROUNDING), 0, 64, "uniform")
    assert not torch.equal(direction, rounding)


def test_dtype_and_the_reexport_from_noise():
    from zolightning.functional import noise

    assert noise.counter_noise is counter_noise
    z = counter_noise(SEED, KEY, 0, 100, dtype=torch.bfloat16)
    assert z.dtype == torch.bfloat16 and torch.equal(z, counter_noise(SEED, KEY, 0, 100).to(torch.bfloat16))


# ---------------------------------------------------------------------------------------------- statistics


def _ks_statistic_normal(sample: torch.Tensor) -> float:
    """Kolmogorov–Smirnov distance between the sample's empirical CDF and N(0, 1)'s (Φ by erf, in float64)."""
    x = sample.double().sort().values
    n = x.numel()
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return max(float((ranks / n - cdf).max()), float((cdf - (ranks - 1) / n).max()))


def test_gaussian_moments_and_a_ks_test_of_ten_million_draws():
    n = 10_000_000
    z = counter_noise(SEED, KEY, 0, n).double()
    mean = float(z.mean())
    centred = z - mean
    var = float(centred.square().mean())
    skew = float(centred.pow(3).mean()) / var**1.5
    kurtosis = float(centred.pow(4).mean()) / var**2
    # Standard errors at n = 1e7: mean 3.2e-4, variance 4.5e-4, skewness 7.7e-4, kurtosis 1.5e-3; bounds ≈ 5 of them.
    assert abs(mean) < 1.6e-3 and abs(var - 1.0) < 2.5e-3
    assert abs(skew) < 4e-3 and abs(kurtosis - 3.0) < 8e-3
    # Neighbours (the two normals of one Box–Muller pair, the two pairs of one Philox block) are uncorrelated.
    for lag in (1, 2, 3, 4):
        assert abs(float((z[:-lag] * z[lag:]).mean())) < 5 / math.sqrt(n)
    ks = _ks_statistic_normal(z.float())
    assert ks < 1.95 / math.sqrt(n), f"KS distance {ks:.2e} ≥ the p = 0.001 critical value {1.95 / math.sqrt(n):.2e}"
    assert float(z.abs().max()) <= 5.8  # 24-bit uniforms: |z| ≤ √(2·24·ln 2) ≈ 5.77


def test_rademacher_values_balance_and_independence():
    n = 4_000_000
    r = counter_noise(SEED, KEY, 0, n, "rademacher")
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(r.mean())) < 5 / math.sqrt(n)
    for lag in (1, 31, 32, 128):
        assert abs(float((r[:-lag] * r[lag:]).mean())) < 5 / math.sqrt(n)
    # Each bit position of each word is balanced (128 positions, n/128 draws each).
    per_position = r.view(-1, 128).mean(dim=0)
    assert float(per_position.abs().max()) < 5 / math.sqrt(n / 128)


def test_a_slice_of_an_other_key_is_not_correlated():
    n = 1_000_000
    a, b = counter_noise(SEED, KEY, 0, n), counter_noise(SEED, KEY + 1, 0, n)
    assert abs(float((a * b).mean())) < 5 / math.sqrt(n)


# ---------------------------------------------------------------------------------------------- fused moves


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_fused_add_equals_theta_plus_alpha_z_bitwise(distribution):
    theta = torch.randn(50_001, generator=torch.Generator().manual_seed(0))
    alpha = 1e-3
    z = counter_noise(SEED, KEY, 0, theta.numel(), distribution)
    expected = theta + torch.tensor(alpha, dtype=torch.float32) * z  # two float32 roundings, as the kernel
    for backend in ("numba", "torch"):
        moved = add_counter_noise_(theta.clone(), alpha, SEED, KEY, distribution=distribution, backend=backend)
        assert_bitwise(moved, expected)
    # torch's add_(…, alpha=…) fuses the multiply–add on vectorised CPUs: the two differ by the rounding of α·z, at
    # most 1 ulp of the result where |αz| ≪ |θ| (where θ + αz cancels, by half an ulp of αz).
    fused = theta.clone().add_(z, alpha=alpha)
    large = theta.abs() > 16 * alpha * z.abs()
    assert int((bits(moved).long() - bits(fused).long())[large].abs().max()) <= 1
    assert bool(((moved - fused).abs() <= 2**-23 * fused.abs() + 2**-24 * alpha * z.abs()).all())


def test_fused_update_equals_the_reference_update_math():
    """θ ← (θ + r·z)·(1 − lr·λ) − lr·g·z: bitwise as the float32 operations in that order, and within rounding of
    the unfused restore + zo_sgd_update_."""
    theta = torch.randn(40_003, generator=torch.Generator().manual_seed(1))
    lr, wd, g, eps = 1e-2, 0.1, 0.37, 1e-3
    z = counter_noise(SEED, KEY, 11, theta.numel())
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    expected = (theta + f32(-eps) * z) * f32(1 - lr * wd) + f32(-lr * g) * z
    for backend in ("numba", "torch"):
        moved = counter_sgd_update_(theta.clone(), SEED, KEY, g, lr=lr, weight_decay=wd, restore=-eps, offset=11,
                                    backend=backend)
        assert_bitwise(moved, expected)
    unfused = theta.clone().add_(z, alpha=-eps)
    zo_sgd_update_(unfused, z, g, lr=lr, weight_decay=wd)
    torch.testing.assert_close(moved, unfused, rtol=1e-6, atol=1e-7)


def test_shards_with_offsets_move_as_the_whole():
    theta = torch.randn(10_000, generator=torch.Generator().manual_seed(2))
    whole = add_counter_noise_(theta.clone(), 0.5, SEED, KEY)
    sharded = theta.clone()
    for start, stop in [(0, 3_333), (3_333, 6_667), (6_667, 10_000)]:
        add_counter_noise_(sharded[start:stop], 0.5, SEED, KEY, offset=start)
    assert_bitwise(sharded, whole)


def test_a_non_contiguous_tensor_moves_in_row_major_order():
    theta = torch.randn(64, 48, generator=torch.Generator().manual_seed(3))
    transposed = theta.t()  # not contiguous: element (i, j) is transposed.contiguous().view(-1)[i·64 + j]
    expected = add_counter_noise_(transposed.contiguous(), 0.1, SEED, KEY)
    add_counter_noise_(transposed, 0.1, SEED, KEY)
    assert_bitwise(transposed.contiguous(), expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_half_precision_nearest_equals_the_float_move_rounded(dtype, distribution):
    theta = torch.randn(30_001, generator=torch.Generator().manual_seed(4)).to(dtype)
    z = counter_noise(SEED, KEY, 0, theta.numel(), distribution)
    expected = (theta.float() + torch.tensor(0.01, dtype=torch.float32) * z).to(dtype)
    for backend in ("numba", "torch"):
        assert_bitwise(add_counter_noise_(theta.clone(), 0.01, SEED, KEY, distribution=distribution,
                                          backend=backend), expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_half_precision_special_values_match_the_reference(dtype, rounding):
    """Subnormals, signed zeros, the largest finite values, infinities and NaN: the kernels' bit-level conversions
    and neighbours against torch's own casts and nextafter."""
    info = torch.finfo(dtype)
    specials = torch.tensor([0.0, -0.0, info.tiny, -info.tiny, info.tiny / 8, -info.tiny / 4, info.max, -info.max,
                             info.max * 0.999, math.inf, -math.inf, math.nan, 1.0, -1.0, info.eps, 65504.0])
    theta = torch.cat([specials, torch.randn(4_000, generator=torch.Generator().manual_seed(5)) * info.tiny * 10])
    theta = theta.to(dtype)
    for alpha in (0.0, info.tiny, 1e-3, 300.0):
        a = add_counter_noise_(theta.clone(), alpha, SEED, KEY, rounding=rounding, backend="numba")
        b = add_counter_noise_(theta.clone(), alpha, SEED, KEY, rounding=rounding, backend="torch")
        both_nan = a.isnan() & b.isnan()
        assert bool(((bits(a) == bits(b)) | both_nan).all()), f"alpha={alpha}"


def test_stochastic_rounding_is_unbiased_reproducible_and_slice_invariant():
    theta = torch.full((4_096,), 1.0, dtype=torch.bfloat16)  # ulp 2⁻⁷ ≈ 0.0078 just above 1, 2⁻⁸ below
    alpha = 1e-4  # |αz| ≤ 5.8e-4, below half an ulp (2⁻⁹ ≈ 0.002 under 1): rounding to nearest loses every move
    z = counter_noise(SEED, KEY, 0, theta.numel())
    assert torch.equal(add_counter_noise_(theta.clone(), alpha, SEED, KEY), theta)
    seeds = range(400)
    moved = torch.stack([
        add_counter_noise_(theta.clone(), alpha, SEED, KEY, rounding="stochastic", rounding_seed=s).float()
        for s in seeds
    ])
    # Averaged over elements and seeds, E[rounded] = exact: 1.6M draws, standard error ≈ 3e-7.
    for part in (z > 0, z < 0):
        mean_move = (moved - 1.0)[:, part].mean()
        assert abs(float(mean_move) - float(alpha * z[part].mean())) < 2e-6
    per_element = (moved - 1.0).mean(dim=0)  # per element, over 400 seeds: follows αz
    assert float(torch.corrcoef(torch.stack([per_element, alpha * z]))[0, 1]) > 0.9
    again = add_counter_noise_(theta.clone(), alpha, SEED, KEY, rounding="stochastic", rounding_seed=3)
    assert torch.equal(again, moved[3].to(torch.bfloat16))
    pieces = theta.clone()
    for start, stop in [(0, 1_001), (1_001, 2_050), (2_050, 4_096)]:
        add_counter_noise_(pieces[start:stop], alpha, SEED, KEY, offset=start, rounding="stochastic",
                           rounding_seed=3)
    assert_bitwise(pieces, again)


def test_float64_weights_move_on_the_reference():
    theta = torch.randn(1_000, dtype=torch.float64)
    z = counter_noise(SEED, KEY, 0, 1_000).double()
    torch.testing.assert_close(add_counter_noise_(theta.clone(), 0.5, SEED, KEY), theta + 0.5 * z, rtol=0, atol=0)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="seed"):
        counter_noise(-1, KEY, 0, 4)
    with pytest.raises(ValueError, match="key"):
        counter_noise(SEED, 2**63, 0, 4)
    with pytest.raises(ValueError, match="offset"):
        counter_noise(SEED, KEY, -1, 4)
    with pytest.raises(ValueError, match="distribution"):
        counter_noise(SEED, KEY, 0, 4, "uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rounding"):
        add_counter_noise_(torch.zeros(4), 1.0, SEED, KEY, rounding="down")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        counter_noise(SEED, KEY, 0, 4, backend="cuda")  # type: ignore[arg-type]


def test_without_numba_the_library_warns_once_and_gives_the_same_values(monkeypatch):
    from zolightning.optim import ZOSGD

    def train_step() -> torch.Tensor:
        torch.manual_seed(1)
        layer = torch.nn.Linear(300, 20)
        x = torch.randn(8, 300, generator=torch.Generator().manual_seed(2))
        ZOSGD(layer.named_parameters(), lr=0.01).step(lambda: layer(x).square().mean(), step=4)
        return layer.weight.detach()

    theta = torch.randn(5_000, generator=torch.Generator().manual_seed(6))
    expected = add_counter_noise_(theta.clone(), 0.2, SEED, KEY, backend="numba")
    trained = train_step()
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    monkeypatch.delitem(sys.modules, "zolightning.functional.numba_noise")
    monkeypatch.setattr(cn, "_modules", {})
    with pytest.warns(RuntimeWarning, match="numba cannot be imported"):
        first = add_counter_noise_(theta.clone(), 0.2, SEED, KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = add_counter_noise_(theta.clone(), 0.2, SEED, KEY)
    assert_bitwise(first, expected)
    assert_bitwise(second, expected)
    assert cn.numba_kernels() is None
    assert_bitwise(train_step(), trained)  # a ZO step on the torch reference: the same weights, never a failure
