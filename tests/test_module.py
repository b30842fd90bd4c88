"""ZOLightningModule under the Lightning Trainer."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import count_noise_passes, trainer_kwargs
from zolightning import ZOConfig, ZOLightningModule
from zolightning.optim import ZOSGD


def regression_data(n: int = 256, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    y = x @ torch.randn(8, 1, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))


def make_regressor(base: type[LightningModule]) -> type[LightningModule]:
    """The same user model written on either base class: switching to ZO is the one-word change of the base."""

    class Regressor(base):  # type: ignore[valid-type, misc]
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("user/mse", loss)
            return loss

    return Regressor


ZORegressor = make_regressor(ZOLightningModule)


def full_loss(model, loader) -> float:
    x, y = loader.dataset.tensors
    model.eval()
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model.net(x), y))


def test_the_subclass_path_trains_with_decreasing_loss():
    model = ZORegressor(zo=ZOConfig(lr=0.004, eps=1e-3))
    loader = regression_data()
    before = full_loss(model, loader)
    trainer = Trainer(max_steps=200, **trainer_kwargs())
    trainer.fit(model, loader)
    assert trainer.global_step == 200
    assert full_loss(model, loader) < 0.5 * before
    assert isinstance(trainer.optimizers[0], ZOSGD)


def test_the_same_seed_gives_an_identical_run_and_another_seed_does_not():
    def run(seed):
        model = ZORegressor(zo=dict(lr=0.004, seed=seed))
        Trainer(max_steps=20, **trainer_kwargs()).fit(model, regression_data())
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    first = run(0)
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))


def test_global_step_advances_and_a_checkpoint_is_written_at_max_steps(tmp_path):
    model = ZORegressor(zo=dict(lr=0.004))
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=5, save_top_k=-1)
    trainer = Trainer(max_steps=10, callbacks=[checkpoint], **trainer_kwargs(enable_checkpointing=True))
    trainer.fit(model, regression_data())
    assert trainer.global_step == 10
    saved = sorted(path.name for path in tmp_path.iterdir())
    assert "epoch=1-step=10.ckpt" in saved, saved
    state = torch.load(tmp_path / "epoch=1-step=10.ckpt", weights_only=True)
    assert state["global_step"] == 10 and state["hyper_parameters"]["zo"]["lr"] == 0.004


def test_values_logged_in_training_step_are_averaged_once_per_step_and_zo_metrics_are_logged():
    model = ZORegressor(zo=dict(lr=0.004))
    trainer = Trainer(max_steps=3, **trainer_kwargs())
    trainer.fit(model, regression_data())
    metrics = trainer.callback_metrics
    for name in ["train/loss", "train/projected_grad", "train/lr", "train/eps", "train/time_forward",
                 "train/time_perturb_update", "user/mse"]:
        assert name in metrics, name
    estimate = model.zo_last_estimate
    torch.testing.assert_close(metrics["user/mse"], (estimate.loss_plus + estimate.loss_minus) / 2)
    assert float(metrics["train/eps"]) == pytest.approx(1e-3)


def test_forwards_run_in_eval_mode_and_train_flags_are_restored():
    seen, after = [], []

    class Spy(ZORegressor):
        def training_step(self, batch, batch_idx):
            seen.append((self.training, self.net[1].training))
            return super().training_step(batch, batch_idx)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            after.append((self.training, self.net[0].training, self.net[1].training))

    model = Spy(zo=dict(lr=0.004))
    trainer = Trainer(max_steps=2, **trainer_kwargs())
    trainer.fit(model, regression_data())
    assert seen == [(False, False)] * 4  # two evaluations per step, dropout off
    assert after == [(True, True, True)] * 2  # the step hands the module back in train mode


def test_eval_mode_can_be_turned_off():
    seen = []

    class Spy(ZORegressor):
        def training_step(self, batch, batch_idx):
            seen.append(self.net[1].training)
            return super().training_step(batch, batch_idx)

    Trainer(max_steps=1, **trainer_kwargs()).fit(Spy(zo=dict(eval_mode=False)), regression_data())
    assert seen == [True, True]


def test_an_lr_scheduler_is_stepped_by_the_module():
    class Scheduled(ZORegressor):
        def configure_optimizers(self):
            optimizer = ZOSGD(self.parameters(), lr=0.1)
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    model = Scheduled()
    trainer = Trainer(max_steps=3, **trainer_kwargs())
    trainer.fit(model, regression_data())
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_a_plain_torch_optimizer_steps_on_the_estimate_and_no_gradient_is_kept():
    class WithAdam(ZORegressor):
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.01)

    model = WithAdam(zo=dict(eps=1e-3))
    loader = regression_data()
    before = full_loss(model, loader)
    trainer = Trainer(max_steps=200, **trainer_kwargs())
    trainer.fit(model, loader)
    assert full_loss(model, loader) < 0.5 * before
    assert all(p.grad is None for p in model.parameters())


def test_a_non_differentiable_objective_trains():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=generator)
    labels = (x @ torch.tensor([1.0, -2.0, 0.5, 1.5]) > 0).long()
    loader = DataLoader(TensorDataset(x, labels), batch_size=256, shuffle=True, generator=generator)

    class ErrorRate(ZOLightningModule):
        def __init__(self):
            super().__init__(zo=dict(lr=0.5, eps=0.05))
            torch.manual_seed(3)
            self.head = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            inputs, target = batch
            return (self.head(inputs).argmax(-1) != target).float().mean()  # a step function: no gradient exists

    model = ErrorRate()
    accuracy = lambda: float((model.head(x).argmax(-1) == labels).float().mean())  # noqa: E731
    before = accuracy()
    Trainer(max_steps=150, **trainer_kwargs()).fit(model, loader)
    assert accuracy() > max(0.85, before + 0.2)


def test_a_model_without_trainable_parameters_is_refused():
    model = ZORegressor()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        Trainer(max_steps=1, **trainer_kwargs()).fit(model, regression_data())


@pytest.mark.parametrize(("options", "match"), [({"eps": 0.0}, "`eps`"), ({"eps": -1.0}, "`eps`"), ({"lr": -1e-3}, "`lr`"),
                                                 ({"distribution": "uniform"}, "distribution"), ({"epss": 1}, "Unknown")])
def test_bad_zo_options_are_refused_by_name(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ZORegressor(zo=options)


def test_a_non_finite_loss_skips_the_update_and_repeated_ones_stop_training():
    class Exploding(ZORegressor):
        def training_step(self, batch, batch_idx):
            return torch.tensor(float("nan"))

    model = Exploding(zo=dict(max_nonfinite=3))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match="3 ZO steps in a row"):
        Trainer(max_steps=10, **trainer_kwargs()).fit(model, regression_data())
    assert model.zo_nonfinite_steps == 3
    for p, b in zip(model.parameters(), before):
        torch.testing.assert_close(p, b, rtol=0, atol=1e-6)


def test_training_step_must_return_a_loss():
    class NoLoss(ZORegressor):
        def training_step(self, batch, batch_idx):
            return {"predictions": 1}

    with pytest.raises(ValueError, match="without 'loss'"):
        Trainer(max_steps=1, **trainer_kwargs()).fit(NoLoss(), regression_data())


def test_an_exception_in_the_second_forward_leaves_clean_weights_and_a_clean_exception_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import OnExceptionCheckpoint

    class FailsLater(ZORegressor):
        calls = 0

        def training_step(self, batch, batch_idx):
            FailsLater.calls += 1
            if FailsLater.calls == 6:  # step 2's second forward, with the weights at θ − εz
                raise RuntimeError("data error in the second forward")
            return super().training_step(batch, batch_idx)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.last_good = [p.detach().clone() for p in self.parameters()]

    model = FailsLater(zo=dict(lr=0.004))
    trainer = Trainer(max_steps=5, callbacks=[OnExceptionCheckpoint(tmp_path)], **trainer_kwargs(enable_checkpointing=True))
    with pytest.raises(RuntimeError, match="second forward"):
        trainer.fit(model, regression_data())
    assert trainer.global_step == 2
    saved = torch.load(tmp_path / "on_exception.ckpt", weights_only=True)["state_dict"]
    for (name, p), good in zip(model.named_parameters(), model.last_good):
        torch.testing.assert_close(p, good, rtol=0, atol=1e-6)  # fp32 rounding of +εz − εz, not a perturbation
        torch.testing.assert_close(saved[name], good, rtol=0, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["zo-sgd", "zo-sgd-mmt", "zo-adam", "hizoo"])
def test_a_dense_run_resumed_from_a_checkpoint_ends_bitwise_equal(tmp_path, optimizer):
    from tests.callbacks.structure_helpers import LayeredModel, assert_resume_is_exact
    from zolightning.optim import create_optimizer

    class WithOptimizer(LayeredModel):
        def configure_optimizers(self):
            return create_optimizer(optimizer, self.named_parameters(), lr=0.003)

    assert_resume_is_exact(lambda: [], tmp_path, model_factory=WithOptimizer)


class WatchesTheOptimizerStep(Callback):
    """Reads the weights (and any gradient) where Lightning's ``on_before_optimizer_step`` hooks run."""

    def __init__(self) -> None:
        self.start: list[torch.Tensor] = []
        self.seen: list[torch.Tensor] = []
        self.grads: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.start.append(torch.cat([p.detach().flatten() for p in pl_module.parameters()]))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.seen.append(torch.cat([p.detach().flatten() for p in pl_module.parameters()]))
        self.grads.append(all(p.grad is not None for p in pl_module.parameters()))


class SGDRegressor(ZORegressor):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.004)


@pytest.mark.parametrize("torch_optimizer", [False, True])
def test_lightnings_optimizer_step_hooks_run_once_per_update_with_the_weights_restored(torch_optimizer):
    """After the step's evaluations and before its update, with θ back from its perturbations (the ZO optimizer's
    restore is not left to its update's noise pass then); a torch optimizer's hooks also see the estimate in .grad."""
    model = SGDRegressor() if torch_optimizer else ZORegressor(zo=dict(lr=0.004))
    watch = WatchesTheOptimizerStep()
    Trainer(max_steps=3, callbacks=[watch], **trainer_kwargs()).fit(model, regression_data())
    assert len(watch.seen) == 3  # once per update, not once per evaluation
    for start, seen in zip(watch.start, watch.seen):
        torch.testing.assert_close(seen, start, rtol=0, atol=1e-6)  # θ (within the arithmetic restore's rounding)
    assert watch.grads == [torch_optimizer] * 3


def test_without_a_hook_that_reads_the_weights_the_restore_rides_on_the_update(monkeypatch):
    """Three passes of noise a ZO step (+εz, −2εz, restore and update together), four when a hook reads θ first."""
    def drawn(callbacks) -> int:
        with monkeypatch.context() as patch:
            counts = count_noise_passes(patch)
            model = ZORegressor(zo=dict(lr=0.004, restore="arithmetic"))
            Trainer(max_steps=1, callbacks=callbacks, **trainer_kwargs()).fit(model, regression_data())
        return sum(counts) // sum(p.numel() for p in model.parameters())

    assert drawn([]) == 3
    assert drawn([WatchesTheOptimizerStep()]) == 4
