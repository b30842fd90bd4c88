"""``check_adaptive_optimizer``: an adaptive torch.optim optimizer on ZO estimates at a backprop learning rate is
named at the start of the fit, with the cause and the ZO optimizers to use instead."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import DemoModel, RandomDataset
from torch.utils.data import DataLoader

from tests.conftest import trainer_kwargs
from zolightning import as_zo
from zolightning.optim import ZOSGD, ZOAdam
from zolightning.trainer_checks import check_adaptive_optimizer

CAUSE = "normalises each coordinate"


class DemoWith(DemoModel):
    """Lightning's demo model with another optimizer (DemoModel's own is ``torch.optim.Adam(lr=learning_rate)``)."""

    def __init__(self, make: Callable[[torch.nn.Module], torch.optim.Optimizer]) -> None:
        super().__init__()
        self.make = make

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make(self)


def warnings_of_fit(model: DemoModel, **zo) -> list[str]:
    """The warnings a 2-step ZO fit of ``model`` gives that name the per-coordinate normalisation."""
    model = as_zo(model, seed=0, **zo)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(max_steps=2, **trainer_kwargs()).fit(model, DataLoader(RandomDataset(32, 8), batch_size=2))
    return [str(w.message) for w in caught if CAUSE in str(w.message)]


def test_the_demo_models_own_adam_at_lr_0_02_is_named_once_with_the_cause_and_the_remedies():
    messages = warnings_of_fit(DemoModel())  # configures torch.optim.Adam(lr=0.02) itself
    assert len(messages) == 1
    message = messages[0]
    assert message.startswith("Adam(lr=0.02) steps on zeroth-order estimates")
    assert "rank one" in message and "±lr = 0.02 of every weight" in message
    for remedy in ("zolightning.optim.ZOSGD", "ZOAdam", "ZOLearningRateFinder", "lr <= 0.0001"):
        assert remedy in message


@pytest.mark.parametrize(
    "model, zo",
    [
        (DemoModel(learning_rate=1e-5), {}),  # each weight moves by about 1e-5 per step
        (DemoWith(lambda m: ZOSGD(m.named_parameters(), lr=0.02)), {}),
        (DemoWith(lambda m: ZOAdam(m.named_parameters(), lr=0.02)), {}),  # the ZO Adam: the user chose it for ZO
        (DemoModel(), {"gradient": "backprop"}),  # backprop: Adam's own setting
    ],
    ids=["adam-1e-5", "zosgd", "zoadam", "backprop"],
)
def test_a_small_lr_a_zo_optimizer_or_backprop_gives_no_warning(model, zo):
    assert warnings_of_fit(model, **zo) == []


class MyAdam(torch.optim.Adam):
    """A user's own Adam: the warning covers subclasses too."""


@pytest.mark.parametrize(
    "make", [torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.NAdam, MyAdam],
    ids=lambda make: make.__name__,
)
def test_every_adaptive_optimizer_and_subclass_is_checked_on_its_largest_group_lr(make):
    head, body = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    optimizer = make([{"params": body.parameters(), "lr": 1e-6}, {"params": head.parameters(), "lr": 1e-3}])
    with pytest.warns(UserWarning, match=rf"{make.__name__}\(lr=0.001\) steps on zeroth-order estimates"):
        check_adaptive_optimizer(optimizer, zo_estimates=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_adaptive_optimizer(optimizer, zo_estimates=False)
        check_adaptive_optimizer(torch.optim.SGD(head.parameters(), lr=0.1), zo_estimates=True)
