"""``LossRiseGuard``: one warning when the smoothed training loss drifts above its best, none for noise, and the same
verdict after a resume."""

from __future__ import annotations

import random
import warnings

import pytest
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.demos.boring_classes import DemoModel, RandomDataset
from torch.utils.data import DataLoader

from tests.conftest import trainer_kwargs
from zolightning import ZOConfig, as_zo
from zolightning.engine.guards import LossRiseGuard

RISING = "ZO training loss is rising"


def feed(guard: LossRiseGuard, losses: list[float]) -> list[str]:
    """The warnings ``guard`` gives while it takes ``losses``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for loss in losses:
            guard.observe(loss, [0.02])
    return [str(w.message) for w in caught]


def rising(start: float = 2.5, updates: int = 400) -> list[float]:
    """A noisy loss whose level drifts linearly from ``start`` to 2.6×``start``: Lightning's demo model under Adam."""
    noise = random.Random(0)
    return [start * (1 + 1.6 * i / updates) * noise.uniform(0.5, 1.5) for i in range(updates)]


def test_a_drifting_loss_warns_once_naming_the_rise_the_lr_and_the_remedies():
    messages = feed(LossRiseGuard(2.0), rising())
    assert len(messages) == 1
    assert RISING in messages[0] and "learning rate 0.02" in messages[0]
    for remedy in ("ZOSGD", "ZOAdam", "ZOLearningRateFinder", "loss_rise_factor: null", "Training continues"):
        assert remedy in messages[0]


def test_it_waits_for_a_full_window_and_fires_when_the_median_doubles():
    guard = LossRiseGuard(2.0)
    assert feed(guard, [1.0] * LossRiseGuard.WINDOW) == []
    # The median of the window crosses 2 once more than half of it is above 2.
    assert feed(guard, [2.2] * (LossRiseGuard.WINDOW // 2)) == []
    assert len(feed(guard, [2.2])) == 1 and guard.updates == LossRiseGuard.WINDOW * 3 // 2 + 1


@pytest.mark.parametrize(
    "losses",
    [
        [random.Random(1).expovariate(1.0) for _ in range(3000)],  # heavy noise around a flat level
        [10 * 0.99**i + random.Random(i).uniform(0, 0.05) for i in range(3000)],  # converging to about 0
        [-5 + random.Random(i).uniform(-1, 1) for i in range(3000)],  # a negative loss (a log-likelihood bound)
        [float("nan")] * 10 + [1.0] * 100,  # non-finite losses are the NonFiniteGuard's
    ],
    ids=["noisy-flat", "converged-near-zero", "negative", "non-finite"],
)
def test_noise_convergence_and_signed_losses_do_not_warn(losses):
    assert feed(LossRiseGuard(2.0), losses) == []


def test_no_factor_turns_it_off_and_the_config_refuses_a_factor_of_one_or_less():
    assert feed(LossRiseGuard(None), rising()) == []
    assert ZOConfig().loss_rise_factor == 2.0 and ZOConfig(loss_rise_factor=None).loss_rise_factor is None
    with pytest.raises(ValueError, match=r"`loss_rise_factor` must be > 1 or None"):
        ZOConfig(loss_rise_factor=1.0)


def test_a_resumed_guard_warns_at_the_same_update_and_only_once():
    losses = rising()
    whole = LossRiseGuard(2.0)
    feed(whole, losses)
    first, second = LossRiseGuard(2.0), LossRiseGuard(2.0)
    assert feed(first, losses[:120]) == []
    second.load_state_dict(first.state_dict())
    assert len(feed(second, losses[120:])) == 1
    assert second.state_dict() == whole.state_dict()
    resumed = LossRiseGuard(2.0)
    resumed.load_state_dict(second.state_dict())
    assert feed(resumed, losses) == []  # a run that already warned does not warn again after a resume


@pytest.mark.parametrize("lr, warns", [(0.02, True), (1e-4, False)])
def test_lightnings_demo_model_with_its_own_adam_warns_when_its_loss_drifts_up(lr, warns):
    # DemoModel configures torch.optim.Adam(lr=0.02): on ZO estimates every weight takes a ±lr step per update, and
    # its loss (batch size 1) drifts from about 2.5 to 6 and beyond. At lr 1e-4 the loss does not rise.
    seed_everything(0, verbose=False)
    model = as_zo(DemoModel(learning_rate=lr), seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(max_steps=700, **trainer_kwargs()).fit(model, DataLoader(RandomDataset(32, 64), batch_size=1))
    messages = [str(w.message) for w in caught if RISING in str(w.message)]
    assert len(messages) == (1 if warns else 0)
    assert model.zo_engine.loss_rise.warned is warns
    state = model.zo_engine.state_dict()["loss_rise"]  # what a checkpoint keeps (a warned guard stops counting)
    assert state["warned"] is warns and (state["updates"] < 700 if warns else state["updates"] == 700)


def estimate(plus: float, minus: float):
    import torch

    from zolightning.functional.estimate import DirectionalEstimate

    return DirectionalEstimate(seed=0, loss_plus=torch.tensor(plus),
                               loss_minus=torch.tensor(minus))


def test_ties_are_counted_and_warn_once_when_most_recent_steps_tie():
    from zolightning.engine.guards import TieGuard

    guard = TieGuard()
    assert TieGuard.is_tie(0.6953125, 0.6953125) and TieGuard.is_tie(1.0, 1.0 + 2e-7)
    assert not TieGuard.is_tie(0.69531, 0.69521)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(2 * TieGuard.WINDOW):  # every other step ties: a share of 0.5 warns once the window is full
            guard.observe([estimate(0.5, 0.5 if k % 2 else 0.6)], eps=1e-3)
            assert guard.warned == (k >= TieGuard.WINDOW - 1)
    assert guard.share == 0.5
    assert len(caught) == 1


def test_the_tie_warning_names_the_causes_and_resumes_with_its_window():
    from zolightning.engine.guards import TieGuard

    guard = TieGuard()
    with pytest.warns(UserWarning, match=r"100% of the last 50 ZO steps measured L\+ = L-.*1/B"):
        for _ in range(TieGuard.WINDOW):
            guard.observe([estimate(0.25, 0.25)], eps=1e-3)
    restored = TieGuard()
    restored.load_state_dict(guard.state_dict())
    assert restored.share == 1.0 and restored.warned
    quiet = TieGuard()
    for _ in range(3 * TieGuard.WINDOW):
        quiet.observe([estimate(0.25, 0.2501)], eps=1e-3)
    assert not quiet.warned and quiet.share == 0.0
