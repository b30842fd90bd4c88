"""``Settlement``: the update brings back, with the z it draws, the displacement a measurement left for it."""

import pytest
import torch

from tests.estimators.helpers import assert_restored, batch, plan_for, small_mlp
from zolightning.engine.probe import Probe
from zolightning.estimators import OneSided
from zolightning.optim.settlement import Settlement


def displaced_model():
    model = small_mlp()
    plan = plan_for(model)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batch()
    probe = Probe(lambda: torch.nn.functional.cross_entropy(model(x), y), plan, "arithmetic")
    OneSided().measure(probe, [2])
    return model, plan, before, probe.release()


def test_settling_each_tensor_once_brings_theta_back():
    model, plan, before, displaced = displaced_model()
    settlement = Settlement(plan, displaced)
    for index, entry in enumerate(plan):
        settlement.settle(index, entry.direction_at(2), 2)
        settlement.settle(index, entry.direction_at(2), 2)  # a second settle of the same tensor does nothing
        settlement.settle(index, entry.direction_at(3), 3)  # nor does another direction's z
    assert_restored(plan, before, 2, "arithmetic")
    settled = [p.detach().clone() for p in model.parameters()]
    settlement.finish()  # nothing is left displaced
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), settled))


def test_finish_brings_back_what_a_failing_update_did_not_reach():
    model, plan, before, displaced = displaced_model()
    settlement = Settlement(plan, displaced)
    with pytest.raises(RuntimeError, match="update failed"):
        try:
            settlement.settle(0, plan[0].direction_at(2), 2)
            raise RuntimeError("update failed")
        finally:
            settlement.finish()
    assert_restored(plan, before, 2, "arithmetic")


def test_without_a_displacement_nothing_moves():
    model = small_mlp()
    plan = plan_for(model)
    before = [p.detach().clone() for p in model.parameters()]
    settlement = Settlement(plan, None)
    settlement.settle(0, plan[0].direction_at(2), 2)
    settlement.finish()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
