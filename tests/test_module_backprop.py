"""`zo.gradient: backprop`: the same module trains by backpropagation with a torch optimizer (the baseline)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import trainer_kwargs
from zolightning import ZOConfig, ZOLightningModule
from zolightning.optim import ZOSGD


class Regression(ZOLightningModule):
    def __init__(self, zo: ZOConfig, optimizer: str = "adam") -> None:
        super().__init__(zo=zo)
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 1)
        self.optimizer = optimizer
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        if self.optimizer == "zo":
            return ZOSGD(self.named_parameters(), lr=1e-2, eps=1e-3)
        return torch.optim.Adam(self.parameters(), lr=0.05)


def data(batches: int = 4) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(8 * batches, 4, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return DataLoader(TensorDataset(x, y), batch_size=8)


def loss_of(model: Regression) -> float:
    x, y = data().dataset.tensors
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model.net(x), y))


def test_backprop_switch_trains_with_one_forward_per_step():
    model = Regression(ZOConfig(gradient="backprop"))
    start = loss_of(model)
    trainer = Trainer(max_steps=60, **trainer_kwargs())
    trainer.fit(model, data())
    assert trainer.global_step == 60
    assert model.forwards == 60  # one forward and one backward per step; a ZO step would run two forwards
    assert loss_of(model) < 0.2 * start


def test_backprop_accumulates_micro_batches_into_one_update():
    model = Regression(ZOConfig(gradient="backprop", accumulate_batches=2))
    trainer = Trainer(max_steps=5, **trainer_kwargs())
    trainer.fit(model, data(batches=4))
    assert trainer.global_step == 5 and model.forwards == 10


def test_backprop_with_a_zo_optimizer_is_refused_with_the_fix():
    model = Regression(ZOConfig(gradient="backprop"), optimizer="zo")
    with pytest.raises(ValueError, match="zo.gradient: backprop.*torch.optim"):
        Trainer(max_steps=1, **trainer_kwargs()).fit(model, data())


def test_unknown_gradient_source_is_refused():
    with pytest.raises(ValueError, match="gradient"):
        ZOConfig(gradient="sgd")
