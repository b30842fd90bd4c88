"""The two-sided (SPSA, MeZO) estimator: L(θ + εz) and L(θ − εz), optionally L(θ)."""

import pytest
import torch

from tests.estimators.helpers import batch, estimate, plan_for, small_mlp
from zolightning.estimators import TwoSided
from zolightning.functional.noise import step_seed
from zolightning.structures import PerturbationStructure, TrainableTensor


def test_averaged_two_point_estimates_align_with_the_backprop_gradient():
    model = small_mlp()
    x, y = batch()
    loss_fn = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    loss_fn().backward()
    true_gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    plan = plan_for(model)
    directions = 3000
    seeds = [step_seed(0, k) for k in range(directions)]
    total = torch.zeros_like(true_gradient)
    for e in estimate(loss_fn, plan, seeds):
        z = torch.cat([entry.direction_at(e.seed).flatten() for entry in plan])
        total += e.projected_gradient(1e-3) * z
    cosine = torch.nn.functional.cosine_similarity(total / directions, true_gradient, dim=0)
    assert cosine >= 0.9, f"cosine {float(cosine):.3f}"


def test_two_forwards_per_direction_and_three_with_the_centre():
    estimator = TwoSided(directions=4)
    assert estimator.points(False) == (1.0, -1.0) and estimator.points(True) == (0.0, 1.0, -1.0)
    assert estimator.forwards_per_step() == 8 and estimator.forwards_per_step(center=True) == 12


def test_a_centred_estimate_also_measures_the_curvature_along_z():
    x = torch.tensor([1.0, -2.0])
    scales = torch.tensor([3.0, 0.5])
    plan = PerturbationStructure().plan([TrainableTensor("x", x, 1e-2)], 0)
    (e,) = estimate(lambda: 0.5 * (scales * x * x).sum(), plan, 9, center=True)
    z = plan[0].direction_at(9)
    # For a quadratic the second difference is exactly ε²·zᵀHz.
    assert float(e.second_difference) == pytest.approx(1e-4 * float((scales * z * z).sum()), rel=1e-3)
    assert float(e.loss) == pytest.approx(float(0.5 * (scales * x * x).sum()))
