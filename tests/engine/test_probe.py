"""``Probe``: moves the weights to θ + offset·εz for the estimators, and brings them back (restore guarantee)."""

import pytest
import torch

from tests.estimators.helpers import assert_restored, batch, estimate, fails_at, plan_for, small_mlp
from zolightning.engine.probe import Probe
from zolightning.estimators import OneSided, TwoSided
from zolightning.functional.perturbation import Displacement


def test_weights_come_back_within_fp32_rounding_after_the_two_forwards():
    model = small_mlp()
    plan = plan_for(model)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batch()
    (e,) = estimate(lambda: torch.nn.functional.cross_entropy(model(x), y), plan, 11, restore="arithmetic")
    assert e.loss_plus != e.loss_minus
    assert_restored(plan, before, 11, "arithmetic")


def test_snapshot_restore_is_bitwise_exact_in_bfloat16():
    model = small_mlp().to(torch.bfloat16)
    plan = plan_for(model, eps=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batch()
    loss_fn = lambda: torch.nn.functional.cross_entropy(model(x.bfloat16()).float(), y)  # noqa: E731
    probe = Probe(loss_fn, plan, "snapshot")
    assert probe.exact
    TwoSided().measure(probe, [5])
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # left at θ − εz
    probe.restore()
    assert_restored(plan, before, 5, "snapshot")


@pytest.mark.parametrize("restore", ["arithmetic", "snapshot"])
def test_an_exception_in_the_second_forward_leaves_the_weights_unperturbed(restore):
    model = small_mlp()
    plan = plan_for(model)
    before = [p.detach().clone() for p in model.parameters()]
    calls: list[int] = []
    failing_loss = fails_at(2, model, calls)

    with pytest.raises(RuntimeError, match="second forward"):
        estimate(failing_loss, plan, 3, restore=restore)
    assert len(calls) == 2
    assert_restored(plan, before, 3, restore)


def test_release_hands_over_where_theta_is_and_leaves_it_there():
    """The engine leaves the weights at θ + εz for the update, which brings them back with the z it draws
    (tests/optim/test_settlement.py); after a release, the probe's own restore has nothing to undo."""
    model = small_mlp()
    plan = plan_for(model)
    x, y = batch()
    probe = Probe(lambda: torch.nn.functional.cross_entropy(model(x), y), plan, "arithmetic")
    OneSided().measure(probe, [2])
    displaced = [p.detach().clone() for p in model.parameters()]
    assert probe.release() == Displacement.along(plan, 2, 1.0) and not probe.exact
    probe.restore()
    assert all(torch.equal(p, d) for p, d in zip(model.parameters(), displaced))
    assert probe.release() is None


def test_moving_to_another_direction_first_brings_theta_back():
    model = small_mlp()
    plan = plan_for(model)
    before = [p.detach().clone() for p in model.parameters()]
    seen = []
    probe = Probe(lambda: seen.append([p.detach().clone() for p in model.parameters()]) or 0.0, plan, "snapshot")
    probe.loss_at(1, 1.0)
    probe.loss_at(2, 1.0)
    for entry, old, at_second in zip(plan, before, seen[1]):
        torch.testing.assert_close(at_second, old + entry.eps * entry.direction_at(2))
    probe.restore()
    assert_restored(plan, before, 2, "snapshot")
