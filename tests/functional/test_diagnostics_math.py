"""The diagnostics' math against explicit computations with materialised estimates and projections."""

from __future__ import annotations

import math

import pytest
import torch

from zolightning.functional.diagnostics import estimate_statistics, gram_update_
from zolightning.functional.directions import DenseDirection
from zolightning.functional.hessian import PreconditionedDirection
from zolightning.functional.low_rank import LowRankDirection, draw_factors
from zolightning.functional.masked import MaskedDirection


def test_statistics_match_the_materialised_estimates():
    generator = torch.Generator().manual_seed(0)
    d, M, q = 50, 6, 2
    directions = torch.randn(M, d, generator=generator, dtype=torch.float64)
    gradient = torch.randn(d, generator=generator, dtype=torch.float64)
    true = directions @ gradient
    measured = true + 0.1 * torch.randn(M, generator=generator, dtype=torch.float64)
    gram = torch.zeros(M, M, dtype=torch.float64)
    gram_update_(gram, directions[:, :20])
    gram_update_(gram, directions[:, 20:])  # one tensor at a time adds up to the whole Gram matrix

    stats = estimate_statistics(measured, gram, q, true, float(gradient @ gradient), 0.25 * float(gradient @ gradient))

    estimates = measured[:, None] * directions
    step_estimate = estimates[:q].mean(0)
    assert stats.cosine == pytest.approx(float(step_estimate @ gradient / (step_estimate.norm() * gradient.norm())))
    spread = (estimates - estimates.mean(0)).square().sum(1).sum() / (M - 1)
    assert stats.variance == pytest.approx(float(spread))
    assert stats.relative_variance == pytest.approx(float(spread / gradient.square().sum()))
    assert stats.snr == pytest.approx(float(true.square().sum() / (measured - true).square().sum()))
    assert stats.alignment == pytest.approx(0.25)
    assert stats.projected_gradient_rms == pytest.approx(float(measured.square().mean().sqrt()))


def test_without_the_gradient_only_the_forward_figures_are_reported():
    stats = estimate_statistics(torch.tensor([1.0, -3.0]), torch.eye(2), 1)
    assert (stats.cosine, stats.alignment, stats.snr, stats.relative_variance) == (None, None, None, None)
    # ĝ = (1, 0) and (0, −3), their mean (0.5, −1.5): Σ‖ĝᵢ − mean‖² = 2.5 + 2.5 over M − 1 = 1.
    assert stats.variance == pytest.approx(5.0)
    assert stats.projected_gradient_rms == pytest.approx(math.sqrt(5))


def _projection_energy(samples: torch.Tensor, gradient: torch.Tensor) -> float:
    """‖P·g‖² with P the orthogonal projector onto the span of many sampled directions (flattened rows)."""
    basis = torch.linalg.svd(samples.double(), full_matrices=False)
    rank = int((basis.S > basis.S[0] * 1e-4).sum())  # fp32 samples: round-off lies far below
    span = basis.Vh[:rank]
    return float((span @ gradient.double().reshape(-1)).square().sum())


@pytest.mark.parametrize("kind", ["dense", "masked", "lozo", "subzero", "preconditioned-masked"])
def test_subspace_energy_is_the_projection_onto_the_span_of_the_directions(kind):
    param = torch.zeros(6, 5)
    gradient = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    mask = torch.rand(6, 5, generator=torch.Generator().manual_seed(2)) < 0.4
    direction = {
        "dense": lambda: DenseDirection(),
        "masked": lambda: MaskedDirection(mask),
        "lozo": lambda: LowRankDirection("lozo", draw_factors(param, "lozo", 2, 3)),
        "subzero": lambda: LowRankDirection("subzero", draw_factors(param, "subzero", 2, 3)),
        "preconditioned-masked": lambda: PreconditionedDirection(MaskedDirection(mask), torch.rand(6, 5) + 0.5),
    }[kind]()
    samples = torch.stack([direction.sample(param, seed).reshape(-1) for seed in range(200)])
    assert float(direction.subspace_energy(gradient)) == pytest.approx(_projection_energy(samples, gradient), rel=1e-4)


def test_a_direction_that_does_not_know_its_subspace_says_so():
    low_rank = LowRankDirection("lozo", draw_factors(torch.zeros(4, 4), "lozo", 1, 0))
    assert PreconditionedDirection(low_rank, torch.ones(4, 4)).subspace_energy(torch.ones(4, 4)) is None
