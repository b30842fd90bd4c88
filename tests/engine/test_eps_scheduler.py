"""``EpsScheduler``: ε in the param groups, moved like torch's LR schedulers move lr (the base is the schedule's, and a
value written into a group is honoured)."""

import pytest
import torch

from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.engine.eps_scheduler import EpsScheduler
from zolightning.functional.eps_schedule import eps_factor
from zolightning.optim import ZOSGD


def test_the_constant_schedule_writes_nothing():
    groups = [{"eps": 3e-3}]
    scheduler = EpsScheduler("constant", 0.1)
    scheduler.set(groups, "eps", 5, None)
    assert groups == [{"eps": 3e-3}] and scheduler.state_dict() == {"base_eps": None, "written": None}


def test_a_schedule_writes_base_times_factor_and_keeps_the_base():
    groups = [{"eps": 1e-3}, {"eps": 4e-3}]
    scheduler = EpsScheduler("cosine", 0.1)
    for step in range(4):
        scheduler.set(groups, "eps", step, 10)
        assert [g["eps"] for g in groups] == [base * eps_factor("cosine", step, 10, 0.1) for base in (1e-3, 4e-3)]
    assert scheduler.base_eps == [1e-3, 4e-3]


def test_a_value_written_into_a_group_is_that_steps_eps_and_the_new_base():
    groups = [{"eps": 1e-3}]
    scheduler = EpsScheduler("linear", 0.1)
    scheduler.set(groups, "eps", 0, 10)
    scheduler.set(groups, "eps", 1, 10)
    groups[0]["eps"] = 5e-3  # a user's edit (or the finder's, or a replay's logged ε)
    scheduler.set(groups, "eps", 2, 10)
    assert groups[0]["eps"] == 5e-3
    scheduler.set(groups, "eps", 3, 10)
    ratio = eps_factor("linear", 3, 10, 0.1) / eps_factor("linear", 2, 10, 0.1)
    assert groups[0]["eps"] == pytest.approx(5e-3 * ratio, rel=1e-12)


def test_its_state_resumes_the_schedule_and_a_non_constant_one_needs_the_run_length():
    groups = [{"eps": 1e-3}]
    scheduler = EpsScheduler("geometric", 0.01)
    scheduler.set(groups, "eps", 0, 20)
    scheduler.set(groups, "eps", 1, 20)
    resumed = EpsScheduler("geometric", 0.01)
    resumed.load_state_dict(scheduler.state_dict())
    twin = [dict(groups[0])]
    scheduler.set(groups, "eps", 2, 20)
    resumed.set(twin, "eps", 2, 20)
    assert twin == groups
    with pytest.raises(ValueError, match="`eps_schedule: geometric` needs the run's length"):
        EpsScheduler("geometric", 0.01).set([{"eps": 1e-3}], "eps", 0, None)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_a_users_eps_edit_mid_run_is_honoured_by_the_next_step(schedule):
    """``group["eps"] = x`` between steps: the next step perturbs with exactly x (and a schedule goes on from it)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2)
    x = torch.randn(8, 4)
    optimizer = ZOSGD(layer.parameters(), lr=0.01, eps=1e-3)
    engine = StepEngine(ZOConfig(eps_schedule=schedule))
    engine.total_steps = 10
    optimizer.use_engine(engine)
    loss = lambda: layer(x).pow(2).mean()  # noqa: E731
    for _ in range(3):
        optimizer.step(loss)
    optimizer.param_groups[0]["eps"] = 7e-3
    optimizer.step(loss)
    measurement = engine.last
    assert measurement.step == 3 and measurement.group_eps == (7e-3,)
    assert all(entry.eps == 7e-3 for entry in measurement.plan)
    optimizer.step(loss)
    ratio = 1.0 if schedule == "constant" else eps_factor(schedule, 4, 10, 0.1) / eps_factor(schedule, 3, 10, 0.1)
    expected = 7e-3 * ratio
    assert engine.last.eps == pytest.approx(expected, rel=1e-12) and optimizer.param_groups[0]["eps"] == engine.last.eps
