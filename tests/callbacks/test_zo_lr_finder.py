"""ZOLearningRateFinder under the Trainer: it reports, applies on request, leaves the weights alone, and resumes."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.callbacks.structure_helpers import LayeredModel, loader
from tests.conftest import trainer_kwargs
from zolightning.callbacks import ZOLearningRateFinder


class WeightsAtStart(Callback):
    def on_train_start(self, trainer, pl_module):
        self.weights = [p.detach().clone() for p in pl_module.parameters()]
        self.groups = [dict(lr=g["lr"], eps=g["eps"]) for g in pl_module.zo_optimizer().optimizer.param_groups]


def test_apply_sets_the_proposal_and_the_search_leaves_the_weights_bitwise_alone():
    model = LayeredModel(lr=0.5)
    initial = [p.detach().clone() for p in model.parameters()]
    finder, start = ZOLearningRateFinder(trials=2, apply=True), WeightsAtStart()
    Trainer(**trainer_kwargs(max_steps=1, callbacks=[finder, start])).fit(model, loader(3))
    assert all(torch.equal(a, b) for a, b in zip(start.weights, initial))
    result = finder.result
    assert result is not None and result.lr is not None and result.current_lr == 0.5
    assert finder.confirmation is not None and finder.confirmation.lr is not None
    assert start.groups[0]["lr"] == pytest.approx(finder.confirmation.lr)  # the proposal, or a back-off from it
    assert finder.confirmation.tried[0][0] == pytest.approx(result.lr * 0.25)  # the margin
    assert start.groups[0]["eps"] == pytest.approx(result.eps)
    assert "Proposed lr" in result.explanation


class AdamLayered(LayeredModel):
    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class MomentumLayered(LayeredModel):
    def configure_optimizers(self):
        from zolightning.optim import ZOSGD

        return ZOSGD(self.named_parameters(), lr=self.lr, eps=1e-3, momentum=0.9)


def test_a_zo_sgd_proposal_is_never_applied_to_an_optimizer_on_another_scale(caplog):
    caplog.set_level("INFO")
    finder, start = ZOLearningRateFinder(trials=2, apply=True), WeightsAtStart()
    Trainer(**trainer_kwargs(max_steps=1, callbacks=[finder, start])).fit(AdamLayered(lr=0.02), loader(3))
    assert finder.result.lr is not None
    assert start.groups[0]["lr"] == 0.02
    assert "lr not applied. Adam does not take ZO-SGD's step" in caplog.text


def test_momentum_divides_the_applied_lr_by_its_long_run_gain():
    finder, start = ZOLearningRateFinder(trials=2, apply=True, confirm_steps=0), WeightsAtStart()
    Trainer(**trainer_kwargs(max_steps=1, callbacks=[finder, start])).fit(MomentumLayered(lr=0.5), loader(3))
    assert start.groups[0]["lr"] == pytest.approx(finder.result.lr * 0.25 * 0.1)


def test_without_apply_it_only_reports_and_stop_after_ends_the_fit_before_any_step():
    model = LayeredModel(lr=0.5)
    start = WeightsAtStart()
    trainer = Trainer(**trainer_kwargs(max_steps=5, callbacks=[ZOLearningRateFinder(trials=1, stop_after=True), start]))
    trainer.fit(model, loader(3))
    assert trainer.global_step == 0
    assert start.groups[0]["lr"] == 0.5


def test_a_resumed_run_does_not_search_again(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    first = ZOLearningRateFinder(trials=1, apply=True)
    Trainer(**trainer_kwargs(max_steps=2, enable_checkpointing=True, callbacks=[first, checkpoint])).fit(
        LayeredModel(lr=0.5), loader(3)
    )
    resumed, start = ZOLearningRateFinder(trials=1, apply=True), WeightsAtStart()
    Trainer(**trainer_kwargs(max_steps=3, callbacks=[resumed, start])).fit(
        LayeredModel(lr=0.5), loader(3), ckpt_path=str(tmp_path / "epoch=0-step=2.ckpt")
    )
    assert resumed.result is None
    assert start.groups[0]["lr"] == pytest.approx(first.confirmation.lr)  # what the first fit applied


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"trials": 0}, "trials"), ({"margin": 0.0}, "margin"), ({"confirm_steps": -1}, "confirm_steps"), ({"lr_range": (1.0, 0.1)}, "lr_range"), ({"eps_range": (0.0, 1.0)}, "eps_range")],
)
def test_bad_arguments_fail_early_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ZOLearningRateFinder(**kwargs)


def test_a_module_that_is_not_zo_is_refused_with_the_fix():
    from lightning.pytorch.demos.boring_classes import BoringModel

    with pytest.raises(TypeError, match="as_zo"):
        Trainer(**trainer_kwargs(max_steps=1, callbacks=[ZOLearningRateFinder()])).fit(BoringModel(), loader(1))
