"""HeldOutEvaluation: before/after accuracy, logged, without touching the weights."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import trainer_kwargs
from zolightning import ZOConfig, ZOLightningModule
from zolightning.callbacks import HeldOutEvaluation, LabelPredictor


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[dict[str, float], int | None]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append((dict(metrics), step))


def blobs(n: int = 96, seed: int = 0) -> TensorDataset:
    """Three Gaussian blobs in 4-D: a linear classifier can learn them."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    return TensorDataset(centres[labels] + torch.randn(n, 4, generator=generator), labels)


class BlobData(LightningDataModule):
    """Blobs for training (seed 0) and for validation and test (seed 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.train, self.test = blobs(seed=0), blobs(seed=1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=32)

    val_dataloader = test_dataloader


class Classifier(ZOLightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__(zo=ZOConfig(lr=lr, eps=1e-2))
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def predict_labels(self, batch) -> torch.Tensor:
        return self.net(batch[0]).argmax(dim=-1)


def fit(model: LightningModule, callback: HeldOutEvaluation, steps: int = 60) -> tuple[Trainer, RecordingLogger]:
    logger = RecordingLogger()
    trainer = Trainer(max_steps=steps, callbacks=[callback], limit_val_batches=0, **trainer_kwargs(logger=logger))
    trainer.fit(model, datamodule=BlobData())
    return trainer, logger


def manual_accuracy(model: Classifier) -> float:
    x, y = blobs(seed=1).tensors
    model.eval()
    with torch.no_grad():
        return float((model.net(x).argmax(-1) == y).float().mean())


def test_logs_accuracy_before_and_after_and_prints_a_summary(capsys):
    model = Classifier()
    expected_before = manual_accuracy(model)
    model.train()
    callback = HeldOutEvaluation()
    trainer, logger = fit(model, callback)
    logged = {name: (value, step) for metrics, step in logger.calls for name, value in metrics.items()}
    assert logged["heldout/accuracy_before"] == (pytest.approx(expected_before), 0)
    assert logged["heldout/accuracy_after"] == (pytest.approx(manual_accuracy(model)), 60)
    assert logged["heldout/accuracy_gain"][0] == pytest.approx(callback.accuracy_after - callback.accuracy_before)
    assert callback.accuracy_after > callback.accuracy_before + 0.2  # ZO training learned the blobs
    assert float(trainer.callback_metrics["heldout/accuracy_after"]) == pytest.approx(callback.accuracy_after)
    assert callback.examples == 96
    out = capsys.readouterr().out
    line = f"Held-out test accuracy (96 examples): {100 * expected_before:.2f}% -> {100 * callback.accuracy_after:.2f}%"
    assert line in out and "after 60 steps" in out


def test_evaluation_leaves_weights_bitwise_unchanged_and_restores_train_flags():
    model = Classifier()
    model.train()
    model.net[0].eval()  # a mixed state must come back exactly; the dropout (net[1]) stays in train mode
    flags = [m.training for m in model.modules()]
    weights = {name: t.clone() for name, t in model.state_dict().items()}
    callback = HeldOutEvaluation(split="val")
    trainer = SimpleNamespace(datamodule=BlobData())
    first = callback.evaluate(trainer, model)  # type: ignore[arg-type]
    assert [m.training for m in model.modules()] == flags
    second = callback.evaluate(trainer, model)  # type: ignore[arg-type]
    assert [m.training for m in model.modules()] == flags
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    assert all(p.grad is None for p in model.parameters())
    # Dropout was off during evaluation: both runs agree with a plain eval-mode computation.
    assert first == second == pytest.approx(manual_accuracy(model))


def test_max_batches_limits_the_evaluation():
    callback = HeldOutEvaluation(max_batches=1)
    callback.evaluate(SimpleNamespace(datamodule=BlobData()), Classifier())  # type: ignore[arg-type]
    assert callback.examples == 32


def test_a_module_without_predict_labels_is_refused_clearly():
    class NoPredictions(LightningModule):
        pass

    assert isinstance(Classifier(), LabelPredictor) and not isinstance(NoPredictions(), LabelPredictor)
    with pytest.raises(TypeError, match=r"implement `predict_labels\(batch\) -> LongTensor \[B\]`"):
        HeldOutEvaluation().evaluate(SimpleNamespace(datamodule=BlobData()), NoPredictions())  # type: ignore[arg-type]


def test_missing_loaders_are_reported():
    trainer = SimpleNamespace(datamodule=None, val_dataloaders=None)
    with pytest.raises(ValueError, match="needs a data module with `test_dataloader\\(\\)`"):
        HeldOutEvaluation().evaluate(trainer, Classifier())  # type: ignore[arg-type]
    trainer.val_dataloaders = BlobData().val_dataloader()
    assert 0.0 <= HeldOutEvaluation("val").evaluate(trainer, Classifier()) <= 1.0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(split="train"), "`split` must be 'test' or 'val'"),
        (dict(max_batches=0), "`max_batches` must be a positive integer or None"),
        (dict(max_batches=True), "`max_batches` must be a positive integer or None"),
        (dict(prefix="a/b"), "`prefix` must be a non-empty string"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HeldOutEvaluation(**kwargs)


def test_per_class_accuracy_and_hp_metric_are_logged_with_the_final_accuracy():
    callback = HeldOutEvaluation()
    trainer, logger = fit(Classifier(), callback, steps=20)
    logged = {name: value for metrics, _ in logger.calls for name, value in metrics.items()}
    assert logged["hp_metric"] == pytest.approx(callback.accuracy_after)
    per_class = [logged[f"heldout/class_accuracy/{c}"] for c in range(3)]
    counts = callback.confusion
    assert counts.shape == (3, 3) and int(counts.sum()) == 96
    # The blobs are balanced (32 per class): the mean of the per-class accuracies is the accuracy.
    assert sum(per_class) / 3 == pytest.approx(callback.accuracy_after)


class Interrupted(Classifier):
    def training_step(self, batch, batch_idx):
        if self.trainer.global_step == 3:
            raise KeyboardInterrupt
        return super().training_step(batch, batch_idx)


def test_a_run_stopped_with_ctrl_c_still_reports_where_it_got_to(capsys):
    callback = HeldOutEvaluation()
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown after Ctrl-C
        fit(Interrupted(), callback)
    out = capsys.readouterr().out
    assert callback.accuracy_after is not None
    assert "Held-out test accuracy (96 examples)" in out and "after 3 steps (interrupted)" in out


class StopAtStart(Callback):
    """Ends the fit before its first step, as `ZOLearningRateFinder(stop_after=True)` does, from after the evaluator."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.should_stop = True


def test_a_fit_stopped_before_its_first_step_scores_nothing_and_says_so(capsys, monkeypatch):
    callback = HeldOutEvaluation()
    evaluated = []
    monkeypatch.setattr(callback, "evaluate", lambda *args: evaluated.append(args) or 0.5)
    trainer = Trainer(max_steps=60, callbacks=[callback, StopAtStart()], limit_val_batches=0, **trainer_kwargs())
    trainer.fit(Classifier(), datamodule=BlobData())
    assert trainer.global_step == 0 and not evaluated  # neither before nor after: "28.20% -> 28.20% after 0 steps"
    assert callback.accuracy_before is None and callback.accuracy_after is None
    assert capsys.readouterr().out.splitlines() == [
        "Held-out test accuracy: the test set was not scored, because training stopped before its first step."
    ]


def test_scores_by_torchmetrics_leave_out_a_class_neither_present_nor_predicted():
    evaluator = HeldOutEvaluation(verbose=False)
    # Class 2 is predicted but never the target (it counts, with 0); class 3 is neither (left out of macro averages).
    evaluator.labels = (torch.tensor([0, 2, 1, 1, 0]), torch.tensor([0, 0, 1, 1, 1]), 4)
    scores = evaluator.scores()
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert scores["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 0) / 3)
    with pytest.raises(RuntimeError, match="No evaluation yet"):
        HeldOutEvaluation(verbose=False).scores()
