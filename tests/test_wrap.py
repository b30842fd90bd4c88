"""as_zo: switching an existing, unmodified LightningModule instance to ZO training."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel, DemoModel, RandomDataset
from torch.utils.data import DataLoader

from tests.conftest import trainer_kwargs
from zolightning import ZOLightningModule, as_zo


def demo_loss(model: DemoModel, data: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model.training_step(data, 0)) / len(data)


def test_as_zo_trains_lightnings_unmodified_demo_model_with_its_own_adam():
    torch.manual_seed(0)
    data = torch.randn(256, 32)
    # Adam's step is lr per coordinate whatever the estimate's noise; ZO needs a smaller one than the demo's 0.02.
    model = as_zo(DemoModel(learning_rate=0.005), eps=1e-3, seed=0)
    assert isinstance(model, DemoModel) and isinstance(model, ZOLightningModule)
    before = demo_loss(model, data)
    trainer = Trainer(max_steps=200, **trainer_kwargs())
    trainer.fit(model, DataLoader(RandomDataset(32, 256), batch_size=16))
    assert trainer.global_step == 200  # the wrapped optimizer step advanced global_step
    assert isinstance(trainer.optimizers[0], torch.optim.Adam)
    assert demo_loss(model, data) < 0.9 * before


def test_as_zo_steps_the_models_own_epoch_scheduler():
    model = as_zo(BoringModel(), eps=1e-3)  # SGD(lr=0.1) with StepLR(step_size=1): gamma 0.1 per epoch
    trainer = Trainer(max_epochs=2, limit_train_batches=2, **trainer_kwargs())
    trainer.fit(model, DataLoader(RandomDataset(32, 64), batch_size=8))
    assert trainer.global_step == 4
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.1**2)


def test_as_zo_validates_options_and_input():
    with pytest.raises(ValueError, match="`eps`"):
        as_zo(BoringModel(), eps=0)
    with pytest.raises(TypeError, match="LightningModule"):
        as_zo(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_as_zo_instances_survive_pickle_and_deepcopy():
    model = as_zo(BoringModel(), eps=5e-3)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert type(clone) is type(model)
        assert clone.zo_config.eps == 5e-3
        assert torch.equal(clone.layer.weight, model.layer.weight)


def test_as_zo_on_a_zo_module_updates_its_config():
    model = as_zo(BoringModel())
    assert as_zo(model, eps=0.5) is model and model.zo_config.eps == 0.5
