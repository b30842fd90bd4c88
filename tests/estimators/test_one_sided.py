"""The one-sided (forward-difference) estimator: L(θ) and L(θ + εz)."""

import pytest
import torch

from tests.estimators.helpers import batch, estimate, plan_for, small_mlp
from zolightning.estimators import OneSided


def test_a_one_sided_estimate_evaluates_theta_then_theta_plus_eps_z():
    model = small_mlp()
    x, y = batch()
    loss_fn = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    plan = plan_for(model)
    at_theta = float(loss_fn().detach())
    (one_sided,) = estimate(loss_fn, plan, 3, estimator=OneSided())
    (two_sided,) = estimate(loss_fn, plan, 3)
    assert one_sided.kind == "one-sided"
    assert float(one_sided.loss_center) == at_theta and one_sided.loss_minus is None
    assert float(one_sided.difference) == pytest.approx(float(one_sided.loss_plus) - at_theta)
    assert float(one_sided.loss_plus) == float(two_sided.loss_plus)
    # Both estimate the same directional derivative, up to the one-sided O(ε) bias.
    assert float(one_sided.difference) == pytest.approx(float(two_sided.difference), rel=0.05)
