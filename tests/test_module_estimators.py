"""The estimator options of the ZO step under the Trainer: one-sided, forward gradient, accumulation, clipping, ε
schedules, and the throughput the module logs."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import trainer_kwargs
from zolightning import ZOLightningModule


class Regressor(ZOLightningModule):
    def __init__(self, optimizer: str = "zo", **zo) -> None:
        # zo.lr is the default optimizer's; a plain torch optimizer has its own.
        super().__init__(zo={"seed": 3, **({"lr": 0.01} if optimizer == "zo" else {}), **zo})
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.optimizer_kind = optimizer
        self.estimates = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        if self.optimizer_kind == "sgd":
            return torch.optim.SGD(self.parameters(), lr=0.01)
        return super().configure_optimizers()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.estimates.append(self.zo_last_estimate)


def loader(batch_size: int, n: int = 64) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=batch_size, shuffle=False)


def fit(model: Regressor, batch_size: int, **trainer_options) -> Trainer:
    options = {"max_steps": 4, **trainer_options}
    trainer = Trainer(**trainer_kwargs(**options))
    trainer.fit(model, loader(batch_size))
    return trainer


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("optimizer", ["zo", "sgd"])
def test_accumulating_k_micro_batches_equals_one_k_times_larger_batch(optimizer):
    accumulated = Regressor(optimizer, accumulate_batches=4)
    trainer = fit(accumulated, batch_size=4)
    large = Regressor(optimizer)
    fit(large, batch_size=16)
    assert trainer.global_step == 4  # max_steps counts updates, not micro-batches
    # Equal up to fp32 rounding of the loss differences (each micro-batch restores θ arithmetically).
    torch.testing.assert_close(weights(accumulated), weights(large), rtol=1e-3, atol=1e-4)
    assert not torch.equal(weights(large), weights(Regressor(optimizer)))


def test_a_partial_group_at_the_end_of_an_epoch_is_applied():
    model = Regressor(accumulate_batches=3)
    trainer = fit(model, batch_size=16, max_steps=-1, max_epochs=1)  # 4 micro-batches: one group of 3, then 1
    assert trainer.global_step == 2
    assert not model.zo_engine.accumulated


def test_one_sided_estimates_train_and_report_the_loss_at_theta():
    model = Regressor(estimator="one-sided")
    fit(model, batch_size=16, max_steps=40)
    estimate = model.estimates[-1]
    assert estimate.kind == "one-sided" and estimate.loss_minus is None
    x, y = loader(16).dataset.tensors
    first = model.estimates[0]
    assert float(first.loss_center) == pytest.approx(float(torch.nn.functional.mse_loss(Regressor().net(x[:16]), y[:16])))
    assert float(model.estimates[36].loss) < 0.8 * float(first.loss)  # the same batch, 36 steps later


def test_the_forward_gradient_is_the_exact_directional_derivative():
    model = Regressor(estimator="forward-gradient")
    reference = Regressor()
    fit(model, batch_size=16, max_steps=1)
    estimate = model.estimates[0]
    assert estimate.kind == "forward"
    x, y = loader(16).dataset.tensors
    loss = torch.nn.functional.mse_loss(reference.net(x[:16]), y[:16])
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    plan = model.zo_engine.plan(0)
    expected = sum((g * entry.direction_at(estimate.seed) * entry.eps).sum() for g, entry in zip(grads, plan))
    assert float(estimate.difference) == pytest.approx(float(expected), rel=1e-4)
    assert float(estimate.loss) == pytest.approx(float(loss), rel=1e-6)


def test_forward_gradient_training_lowers_the_loss():
    model = Regressor(estimator="forward-gradient")
    fit(model, batch_size=16, max_steps=30)
    assert float(model.estimates[-1].loss) < 0.7 * float(model.estimates[0].loss)


def test_clipping_bounds_every_update():
    model = Regressor(clip=1e-3, lr=1.0)
    before = weights(model)
    fit(model, batch_size=16, max_steps=1)
    assert abs(model.estimates[0].projected_gradient(1e-3)) > 1e-3  # the raw estimate was larger than the clip
    plan = model.zo_engine.plan(0)
    z = torch.cat([entry.direction_at(model.estimates[0].seed).flatten() for entry in plan])
    moved = weights(model) - before
    torch.testing.assert_close(moved.abs(), 1.0 * 1e-3 * z.abs(), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize(("schedule", "final"), [("linear", 0.1), ("cosine", 0.1), ("geometric", 0.01)])
def test_eps_follows_its_schedule_and_the_schedule_keeps_the_base(schedule, final):
    model = Regressor(eps_schedule=schedule, eps_final_ratio=final)
    fit(model, batch_size=16, max_steps=8)
    group = model.optimizers().optimizer.param_groups[0]
    assert model.zo_engine.eps_schedule.base_eps == [1e-3] and "initial_eps" not in group  # one owner of the base
    from zolightning.functional.eps_schedule import eps_factor

    assert group["eps"] == pytest.approx(1e-3 * eps_factor(schedule, 7, 8, final))
    assert group["eps"] < 1e-3


def test_throughput_and_the_time_split_are_logged():
    model = Regressor()
    trainer = fit(model, batch_size=16, max_steps=2)
    metrics = trainer.logged_metrics
    assert {"train/time_forward", "train/time_perturb_update", "train/steps_per_sec", "train/samples_per_sec"} <= set(metrics)
    assert float(metrics["train/samples_per_sec"]) == pytest.approx(16 * float(metrics["train/steps_per_sec"]), rel=1e-6)


@pytest.mark.parametrize(
    ("options", "match"),
    [({"estimator": "three-point"}, "`estimator`"), ({"accumulate_batches": 0}, "`accumulate_batches`"),
     ({"clip": 0.0}, "`clip`"), ({"eps_schedule": "step"}, "`eps_schedule`"), ({"eps_final_ratio": 0.0}, "`eps_final_ratio`"),
     ({"lr_scales": {"(": 2.0}}, "`lr_scales`"), ({"lr_scales": {"head": -1.0}}, "`lr_scales")],
)
def test_bad_estimator_options_are_refused_by_name(options, match):
    with pytest.raises(ValueError, match=match):
        Regressor(**options)


def test_lr_scales_multiply_the_learning_rate_of_matching_parameters():
    plain, scaled = Regressor(), Regressor(lr_scales={r"^net\.0\.": 3.0, r"^net\.2\.weight$": 0.0})
    start = {n: p.detach().clone() for n, p in plain.named_parameters()}
    fit(plain, batch_size=16, max_steps=1)
    fit(scaled, batch_size=16, max_steps=1)
    moves = {n: p.detach() - start[n] for n, p in plain.named_parameters()}
    scaled_moves = {n: p.detach() - start[n] for n, p in scaled.named_parameters()}
    torch.testing.assert_close(scaled_moves["net.0.weight"], 3.0 * moves["net.0.weight"], rtol=1e-4, atol=1e-7)
    # Still perturbed (and restored up to fp32 rounding), never updated.
    torch.testing.assert_close(scaled_moves["net.2.weight"], torch.zeros_like(moves["net.2.weight"]), rtol=0, atol=1e-7)
    torch.testing.assert_close(scaled_moves["net.2.bias"], moves["net.2.bias"], rtol=1e-4, atol=1e-7)


def test_a_users_eps_edit_mid_run_is_honoured_under_the_trainer():
    class EditEps(Callback):
        def __init__(self) -> None:
            self.eps: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2:
                pl_module.optimizers().optimizer.param_groups[0]["eps"] = 4e-3

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.eps.append(pl_module.zo_engine.last.eps)

    edit = EditEps()
    fit(Regressor(), batch_size=16, max_steps=4, callbacks=[edit])
    assert edit.eps == [1e-3, 1e-3, 4e-3, 4e-3]
