"""What a new user meets first: switching an existing model, their own optimizer, a backprop learning rate, code left
over from manual optimization, Lightning's advice, and what a failed step leaves behind."""

from __future__ import annotations

import warnings

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset
from torch.utils.data import DataLoader

from tests.conftest import trainer_kwargs
from tests.test_module import ZORegressor, regression_data
from zolightning import ZOLightningModule, as_zo
from zolightning.optim import ZOSGD


def test_as_zo_on_a_zo_module_applies_every_new_setting_including_the_noise():
    model = as_zo(ZORegressor(), seed=1)
    as_zo(model, distribution="rademacher", seed=2)
    assert model.zo_config.seed == 2
    Trainer(max_steps=1, **trainer_kwargs()).fit(model, regression_data())
    plan = model.zo_engine.plan(0)
    z = plan[0].direction_at(model.zo_last_estimate.seed)
    assert set(z.unique().tolist()) == {-1.0, 1.0}


class ExistingModel(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return ZOSGD(self.named_parameters(), lr=0.0123, eps=2e-3)


class MyZO(ZOLightningModule, ExistingModel):
    """The pattern of the issue: ZO first in the bases, the user's existing model after it, nothing else."""


def test_the_users_own_configure_optimizers_wins_over_the_default():
    model = MyZO()
    optimizer = model.configure_optimizers()
    assert optimizer.param_groups[0]["lr"] == 0.0123 and optimizer.param_groups[0]["eps"] == 2e-3
    Trainer(max_steps=2, **trainer_kwargs()).fit(model, regression_data())
    assert model.optimizers().optimizer.param_groups[0]["lr"] == 0.0123


def test_the_default_optimizer_applies_only_where_no_class_defines_one():
    class Plain(ZOLightningModule):
        def __init__(self):
            super().__init__(zo=dict(lr=0.5, eps=0.01))
            self.layer = torch.nn.Linear(2, 1)

    optimizer = Plain().configure_optimizers()
    assert isinstance(optimizer, ZOSGD) and optimizer.param_groups[0]["lr"] == 0.5


def test_a_setting_given_to_both_the_optimizer_and_zo_is_refused_naming_it():
    class Both(MyZO):
        def __init__(self):
            ZOLightningModule.__init__(self, zo=dict(eps=1e-2))
            self.layer = torch.nn.Linear(8, 1)

    with pytest.raises(ValueError, match=r"`zo.eps` is set, but ZOSGD has its own"):
        Trainer(max_steps=1, **trainer_kwargs()).fit(Both(), regression_data())


def test_a_backprop_learning_rate_stops_early_with_an_error_that_names_it():
    # Lightning's own demo model, with its own SGD at lr 0.1: under ZO its loss runs to ~1e12 within 40 steps.
    model = as_zo(BoringModel())
    with pytest.raises(FloatingPointError, match=r"diverged.*learning rate 0\.1.*divergence_factor"):
        Trainer(max_steps=40, **trainer_kwargs()).fit(model, DataLoader(RandomDataset(32, 640), batch_size=2))
    assert model.trainer.global_step < 12


def test_a_sound_learning_rate_does_not_trip_the_divergence_guard():
    model = ZORegressor(zo=dict(lr=0.004))
    Trainer(max_steps=150, **trainer_kwargs()).fit(model, regression_data())
    assert model.trainer.global_step == 150


class ManualLeftovers(ZOLightningModule):
    def __init__(self, leftover: str) -> None:
        super().__init__()
        self.leftover = leftover
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        if self.leftover == "manual_backward":
            self.manual_backward(loss)
        elif self.leftover == "loss.backward":
            loss.backward()  # what a backprop training_step does by hand: under ZO, torch's own error named nothing
        else:
            self.optimizers().step()
        return loss


@pytest.mark.parametrize("leftover", ["manual_backward", "loss.backward", "optimizer.step"])
def test_backward_or_optimizer_calls_in_training_step_say_what_to_remove(leftover):
    model = ManualLeftovers(leftover)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"remove `optimizer.step\(\)`.*`manual_backward\(loss\)`.*return loss"):
        Trainer(max_steps=1, **trainer_kwargs()).fit(model, regression_data())
    for p, b in zip(model.parameters(), before):  # restored arithmetically: within 2 ulp of |θ| + 2ε|z|
        torch.testing.assert_close(p, b, rtol=0, atol=1e-6)


def test_modelcheckpoint_prints_no_manual_optimization_advice(tmp_path):
    model = ZORegressor(zo=dict(lr=0.004))
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(max_steps=4, callbacks=[checkpoint], **trainer_kwargs(enable_checkpointing=True)).fit(
            model, regression_data()
        )
    assert not [w for w in caught if "manual optimization" in str(w.message) or "manual_backward" in str(w.message)]
    assert list(tmp_path.glob("*.ckpt"))
    # The filter lives only as long as the run.
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("default")
        warnings.warn("Using ModelCheckpoint with manual optimization and every_n_train_steps, test")
    assert after


def test_a_plain_trainer_fit_prints_no_pytree_deprecation_from_lightning(recwarn):
    # Lightning's CombinedLoader trips torch's `isinstance(treespec, LeafSpec)` FutureWarning on every fit; the filter
    # once lived only in the CLI, so a user's own `Trainer(...).fit` printed it.
    Trainer(max_steps=2, **trainer_kwargs()).fit(ZORegressor(), regression_data())
    assert not [w for w in recwarn if "LeafSpec" in str(w.message)]
    # Scoped to the fit, not installed for the process.
    warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated (test)", FutureWarning)
    assert [w for w in recwarn if "LeafSpec" in str(w.message)]


def test_the_non_finite_error_names_only_the_losses_it_evaluated():
    class Exploding(ZOLightningModule):
        def __init__(self):
            super().__init__(zo=dict(max_nonfinite=2))
            self.layer = torch.nn.Linear(8, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).mean() * float("nan")

    with pytest.raises(FloatingPointError) as error:
        Trainer(max_steps=5, **trainer_kwargs()).fit(Exploding(), regression_data())
    assert "L+ = nan, L- = nan" in str(error.value) and "L0" not in str(error.value)
