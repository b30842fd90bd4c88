"""``zo.lr_scales``' math: the ``by_block_size`` rule and the regex multipliers."""

import pytest
import torch

from zolightning.functional.lr_scaling import BY_BLOCK_SIZE, block_size_scale, check_lr_scales, regex_scale


def test_block_size_scale_is_the_ratio_of_the_stable_steps():
    assert block_size_scale(10, 10) == 1.0
    assert block_size_scale(3, 98) == pytest.approx(100 / 5)
    with pytest.raises(ValueError, match="active"):
        block_size_scale(11, 10)


def test_the_scaled_step_is_the_best_step_of_an_isotropic_quadratic_for_any_block_size():
    # E[ΔL] of one ZO-SGD step on L = λ/2·‖θ‖² along a d-dim Gaussian z is −η‖∇‖² + η²/2·λ(d + 2)‖∇‖²; its best
    # step is 1/(λ(d + 2)). The dense best step times the rule's scale must land on every block's best step.
    generator = torch.Generator().manual_seed(0)
    lam, total = 0.5, 60
    dense_best = 1 / (lam * (total + 2))
    for d in (1, 6, 20, 60):
        theta = torch.randn(d, generator=generator, dtype=torch.float64)
        grad = lam * theta
        lrs = torch.linspace(0.2, 3.0, 57, dtype=torch.float64) / (lam * (d + 2))
        z = torch.randn(40000, d, generator=generator, dtype=torch.float64)
        g = z @ grad
        new = theta - lrs[:, None, None] * g[None, :, None] * z[None]  # (lrs, samples, d)
        mean_loss = (lam / 2 * new.pow(2).sum(-1)).mean(1)
        best = lrs[mean_loss.argmin()]
        assert best == pytest.approx(dense_best * block_size_scale(d, total), rel=0.12)


def test_check_lr_scales_reads_the_rule_and_regexes():
    assert check_lr_scales("by_block_size") == {BY_BLOCK_SIZE: 1.0}
    assert check_lr_scales({"by_block_size": 2, "^head": 10}) == {BY_BLOCK_SIZE: 2.0, "^head": 10.0}
    assert check_lr_scales(None) == {}
    with pytest.raises(ValueError, match="`lr_scales`.*by_block_size"):
        check_lr_scales("by_size")


def test_regex_scale_takes_the_first_match_and_skips_the_rule_key():
    scales = {BY_BLOCK_SIZE: 5.0, r"\.weight$": 2.0, "layer": 3.0}
    assert regex_scale(scales, "layer.weight") == 2.0
    assert regex_scale(scales, "layer.bias") == 3.0
    assert regex_scale(scales, "head.bias") == 1.0


def test_blocks_below_the_median_block_size_count_as_median_sized():
    sizes = [28, 35, 35, 35, 1]  # an embedding, three layers, a norm
    assert block_size_scale(35, 134, sizes) == block_size_scale(35, 134)
    assert block_size_scale(28, 134, sizes) == pytest.approx(136 / 37)  # below the median: the median's step
    assert block_size_scale(1, 134, sizes) == pytest.approx(136 / 37)
    assert block_size_scale(134, 134, sizes) == 1.0
