"""The ZO lr/ε finder on problems whose answer is known."""

from __future__ import annotations

import pytest
import torch

from zolightning.diagnostics.finder import find_lr_and_eps, fit_descent_curve, log_grid
from zolightning.optim import ZOSGD

DIM, CURVATURE = 200, 2.0


def isotropic(dtype=torch.float32, eps=1e-3):
    x = torch.nn.Parameter(torch.randn(DIM, generator=torch.Generator().manual_seed(0)).to(dtype))
    optimizer = ZOSGD([("x", x)], lr=1e-3, eps=eps)
    return optimizer.engine, x, lambda t: (lambda: 0.5 * CURVATURE * (x.float() * x.float()).sum())


def test_it_recovers_the_stable_step_size_of_zo_sgd_on_a_quadratic():
    # For f = ½λ‖x‖² in d dimensions, ZO-SGD with Gaussian z descends in expectation iff lr < 2/(λ(d + 2)) and
    # fastest at 1/(λ(d + 2)): d + 2 times below backprop's 2/λ.
    engine, x, objective_for = isotropic()
    result = find_lr_and_eps(engine, objective_for, trials=4, eps_range=None)
    assert result.lr_stable == pytest.approx(2 / (CURVATURE * (DIM + 2)), rel=0.25)
    assert result.lr_best_step == pytest.approx(1 / (CURVATURE * (DIM + 2)), rel=0.25)
    assert result.lr == pytest.approx(result.lr_best_step / 2)
    assert "Proposed lr" in result.explanation


def test_the_proposal_trains_and_twice_the_stable_step_diverges():
    engine, x, objective_for = isotropic()
    result = find_lr_and_eps(engine, objective_for, trials=4, eps_range=None)
    start = float(objective_for(0)().detach())

    def train(lr):
        y = torch.nn.Parameter(x.detach().clone())
        optimizer = ZOSGD([("y", y)], lr=lr, eps=1e-3)
        for _ in range(200):
            optimizer.step(lambda: 0.5 * CURVATURE * (y * y).sum())
        return float(0.5 * CURVATURE * (y.detach() ** 2).sum())

    assert train(result.lr) < 0.5 * start
    with pytest.raises(FloatingPointError, match="finder"):  # the divergence guard names the finder
        train(2 * result.lr_stable)


def test_the_weights_are_bitwise_unchanged():
    engine, x, objective_for = isotropic()
    before = x.detach().clone()
    find_lr_and_eps(engine, objective_for, trials=2)
    assert torch.equal(x, before)


def test_eps_below_bf16_resolution_is_outside_the_stable_range_and_is_moved_into_it():
    # bf16 keeps 8 significant bits: θ + 1e-5·z rounds back to θ for |θ| ≈ 1, so p̂ reads 0 there.
    engine, _, objective_for = isotropic(torch.bfloat16, eps=1e-5)
    result = find_lr_and_eps(engine, objective_for, trials=2)
    low, high = result.eps_range
    assert low >= 1e-3 and result.eps >= low
    assert "use eps" in result.explanation


def test_pure_noise_proposes_no_learning_rate():
    engine, x, _ = isotropic()
    generator = torch.Generator().manual_seed(1)
    result = find_lr_and_eps(engine, lambda t: (lambda: torch.rand((), generator=generator) + 0 * x.sum()), trials=2)
    assert result.lr is None and "noise" in result.explanation


def test_fitting_the_descent_curve_finds_the_bowl_between_grid_points():
    curve = [(lr, -lr + 2.0 * lr * lr) for lr in log_grid(1e-3, 10.0, 4)]  # optimum 0.25, zero crossing 0.5
    best, stable = fit_descent_curve(curve)
    assert best == pytest.approx(0.25) and stable == pytest.approx(0.5)
    assert fit_descent_curve([(0.1, 0.0), (1.0, 1.0)]) == (None, None)
