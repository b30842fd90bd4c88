"""``GradientUpdate``: the ZO estimate written into ``.grad`` for a plain ``torch.optim`` optimizer to apply."""

import pytest
import torch

from tests.estimators.helpers import assert_restored, batch, small_mlp
from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.optim import GradientUpdate


def test_gradient_written_into_grad_is_the_projected_gradient_times_z():
    model = small_mlp()
    x, y = batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = StepEngine(ZOConfig(seed=9), rule=GradientUpdate(optimizer, eps=1e-3))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.zero_grad(set_to_none=True)
    engine.step(lambda: torch.nn.functional.cross_entropy(model(x), y))
    (estimate,) = engine.last.estimates
    plan = engine.plan(0)
    assert_restored(plan, before, estimate.seed, "arithmetic")  # the fused restore, before the optimizer's step
    for entry in plan:
        expected = estimate.projected_gradient(1e-3) * entry.direction_at(estimate.seed)
        torch.testing.assert_close(entry.param.grad, expected)
    optimizer.step()
    for entry, old in zip(plan, before):
        torch.testing.assert_close(entry.param.detach(), old - 0.1 * entry.param.grad, rtol=1e-4, atol=1e-6)


def test_the_torch_optimizer_steps_on_the_estimate_through_its_closure():
    model = small_mlp()
    x, y = batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    engine = StepEngine(ZOConfig(), rule=GradientUpdate(optimizer, eps=1e-3))
    loss_fn = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    with torch.no_grad():
        initial = float(loss_fn())
    for _ in range(30):
        optimizer.zero_grad(set_to_none=True)
        loss = optimizer.step(lambda: engine.step(loss_fn))
        assert loss.dim() == 0
    assert engine.steps == 30
    with torch.no_grad():
        assert float(loss_fn()) < initial


def test_clipping_bounds_the_projected_gradient_and_its_gradient():
    model = small_mlp()
    x, y = batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = StepEngine(ZOConfig(seed=8, clip=0.5), rule=GradientUpdate(optimizer, eps=1e-3))
    engine.step(lambda: 100 * torch.nn.functional.cross_entropy(model(x), y))
    (estimate,) = engine.last.estimates
    assert abs(estimate.projected_gradient(1e-3)) > 0.5
    assert abs(estimate.projected_gradient(1e-3, clip=0.5)) == 0.5
    for entry in engine.plan(0):
        torch.testing.assert_close(entry.param.grad.abs(), 0.5 * entry.direction_at(estimate.seed).abs())


def test_only_a_torch_optimizer_and_a_positive_eps_are_accepted():
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        GradientUpdate(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`eps`"):
        GradientUpdate(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1), eps=0.0)
