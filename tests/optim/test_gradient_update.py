"""``GradientUpdate``: the ZO estimate written into ``.grad`` for a plain ``torch.optim`` optimizer to apply."""

import pytest
import torch

from tests.estimators.helpers import assert_restored, batch, small_mlp
from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.optim import GradientUpdate


def engine_for(update: GradientUpdate, **config) -> StepEngine:
    engine = StepEngine(ZOConfig(**config))
    engine.attach(update.target())
    return engine


def test_gradient_written_into_grad_is_the_projected_gradient_times_z():
    model = small_mlp()
    x, y = batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    update = GradientUpdate(optimizer, eps=1e-3)
    engine = engine_for(update, seed=9)
    before = [p.detach().clone() for p in model.parameters()]
    measurement = engine.measure(lambda: torch.nn.functional.cross_entropy(model(x), y), defer_restore=True)
    assert measurement.displaced is not None  # θ left at its last point, for the gradient's noise pass
    update.write(measurement)
    (estimate,) = measurement.estimates
    plan = measurement.plan
    assert_restored(plan, before, estimate.seed, "arithmetic")  # the fused restore, before the optimizer's step
    for entry in plan:
        expected = estimate.projected_gradient(1e-3) * entry.direction_at(estimate.seed)
        torch.testing.assert_close(entry.param.grad, expected)
    optimizer.step()
    for entry, old in zip(plan, before):
        torch.testing.assert_close(entry.param.detach(), old - 0.1 * entry.param.grad, rtol=1e-4, atol=1e-6)


def test_a_closure_called_twice_writes_one_estimate_and_brings_theta_back_once():
    """An optimizer that re-evaluates its closure (LBFGS) sees the same gradient each time."""
    model = small_mlp()
    x, y = batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    update = GradientUpdate(optimizer, eps=1e-3)
    engine = engine_for(update, seed=9)
    before = [p.detach().clone() for p in model.parameters()]
    measurement = engine.measure(lambda: torch.nn.functional.cross_entropy(model(x), y), defer_restore=True)
    seen = []

    class Twice:
        def step(self, closure):
            for _ in range(2):
                closure()
                seen.append([p.grad.clone() for p in model.parameters()])
                assert_restored(measurement.plan, before, measurement.seeds[0], "arithmetic")

    update.apply(measurement, stepper=Twice())
    assert all(torch.equal(a, b) for a, b in zip(*seen))


def test_the_torch_optimizer_steps_on_the_estimate_through_its_closure():
    model = small_mlp()
    x, y = batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    update = GradientUpdate(optimizer, eps=1e-3)
    engine = engine_for(update)
    loss_fn = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    with torch.no_grad():
        initial = float(loss_fn())
    for _ in range(30):
        update.apply(engine.measure(loss_fn, defer_restore=True))
        assert all(p.grad is None for p in model.parameters())  # freed after the optimizer's step
    assert engine.steps == 30
    with torch.no_grad():
        assert float(loss_fn()) < initial


def test_eps_lives_in_the_groups_and_an_edit_takes_effect_at_the_next_step():
    model = small_mlp()
    x, y = batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8)
    update = GradientUpdate(optimizer, eps=1e-3)
    assert [group["zo_eps"] for group in optimizer.param_groups] == [1e-3] and optimizer.param_groups[0]["eps"] == 1e-8
    engine = engine_for(update)
    loss_fn = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    update.apply(engine.measure(loss_fn))
    optimizer.param_groups[0]["zo_eps"] = 2e-2
    measurement = engine.measure(loss_fn)
    assert measurement.eps == 2e-2 and measurement.group_eps == (2e-2,)
    assert optimizer.param_groups[0]["eps"] == 1e-8  # Adam's own eps is another thing, untouched


def test_clipping_bounds_the_projected_gradient_and_its_gradient():
    model = small_mlp()
    x, y = batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    update = GradientUpdate(optimizer, eps=1e-3)
    engine = engine_for(update, seed=8, clip=0.5)
    measurement = engine.measure(lambda: 100 * torch.nn.functional.cross_entropy(model(x), y))
    update.write(measurement)
    (estimate,) = measurement.estimates
    assert abs(estimate.projected_gradient(1e-3)) > 0.5
    assert abs(estimate.projected_gradient(1e-3, clip=0.5)) == 0.5
    for entry in measurement.plan:
        torch.testing.assert_close(entry.param.grad.abs(), 0.5 * entry.direction_at(estimate.seed).abs())


def test_only_a_torch_optimizer_and_a_positive_eps_are_accepted():
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        GradientUpdate(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`eps`"):
        GradientUpdate(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1), eps=0.0)
