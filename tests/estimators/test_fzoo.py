"""FZOO's normalized one-sided estimate: N + 1 forwards, the step normalized by the spread of the probe losses."""

from __future__ import annotations

import pytest
import torch

from zolightning import ZOConfig
from zolightning.engine import StepEngine
from zolightning.engine.probe import Probe
from zolightning.estimators import FZOO
from zolightning.optim import ZOSGD
from zolightning.structures import PerturbationStructure, TrainableTensor


def quadratic_problem(dim: int = 12):
    generator = torch.Generator().manual_seed(0)
    x = torch.nn.Parameter(torch.randn(dim, generator=generator))
    scales = torch.linspace(0.5, 2.0, dim)
    return x, lambda: 0.5 * (scales * x * x).sum()


def test_one_centre_and_n_probes_are_evaluated_per_step():
    x, loss = quadratic_problem()
    calls = []
    optimizer = ZOSGD([x], lr=0.01, eps=1e-3)
    optimizer.use_engine(StepEngine(ZOConfig(estimator="fzoo", num_directions=6)))
    optimizer.step(lambda: calls.append(1) or loss())
    assert len(calls) == 7 == optimizer.engine.estimator.forwards_per_step()


def test_each_projected_gradient_is_the_probe_difference_over_the_population_spread():
    x, loss = quadratic_problem()
    plan = PerturbationStructure().plan([TrainableTensor("x", x, 1e-2)], step=0)
    estimator, seeds = FZOO(directions=5), [11, 12, 13, 14, 15]
    probe = Probe(loss, plan, "snapshot")
    numbers = estimator.measure(probe, seeds)
    probe.restore()
    estimates = estimator.combine(numbers, seeds)
    center = float(loss())
    probes = []
    for entry in plan:
        for seed in seeds:
            with torch.no_grad():
                x.add_(entry.direction_at(seed), alpha=1e-2)
                probes.append(float(loss()))
                x.sub_(entry.direction_at(seed), alpha=1e-2)
    spread = torch.tensor(probes).std(correction=0).item()
    for estimate, value in zip(estimates, probes):
        assert float(estimate.loss_center) == pytest.approx(center, rel=1e-6)
        # ε does not enter: the spread of the losses scales the step instead.
        assert estimate.projected_gradient(eps=123.0) == pytest.approx((value - center) / spread, rel=1e-4)


def test_equal_probe_losses_give_a_zero_step():
    x = torch.nn.Parameter(torch.ones(4))
    optimizer = ZOSGD([x], lr=1.0, eps=1e-3)
    # A snapshot restore, so that θ comes back bitwise (an arithmetic one is exact to 2 ulp): the step alone moves it.
    optimizer.use_engine(StepEngine(ZOConfig(estimator="fzoo", num_directions=4, restore="snapshot")))
    optimizer.step(lambda: torch.tensor(2.0))  # a flat objective: σ = 0
    assert optimizer.last_estimates[0].projected_gradient(1e-3) == 0.0
    assert torch.equal(x, torch.ones(4))


def test_fzoo_descends_on_an_ill_scaled_quadratic():
    x, loss = quadratic_problem()
    start = float(loss())
    optimizer = ZOSGD([x], lr=0.05, eps=1e-3)
    optimizer.use_engine(StepEngine(ZOConfig(estimator="fzoo", num_directions=8, distribution="rademacher")))
    for _ in range(300):
        optimizer.step(loss)
    assert float(loss()) < 0.05 * start


@pytest.mark.parametrize("directions", [0, 1])
def test_fewer_than_two_probes_are_refused_by_name(directions):
    with pytest.raises(ValueError, match="num_directions"):
        StepEngine(ZOConfig(estimator="fzoo", num_directions=directions))
    with pytest.raises(ValueError, match="num_directions"):
        FZOO(directions)
