"""``HeldOutEvaluation``: held-out accuracy before the first update and after the last one.

The module tells the callback what it predicts through a small protocol, :class:`LabelPredictor`:

* ``predict_labels(batch) -> LongTensor [B]`` (required): the predicted class of each example;
* ``target_labels(batch) -> LongTensor [B]`` (optional): the true classes. Without it the callback reads
  ``batch["labels"]`` from a mapping batch, else ``batch[1]`` from a ``(inputs, labels)`` sequence.

:class:`zolightning.tasks.SequenceClassificationTask` and :class:`zolightning.tasks.PromptClassificationTask` implement
it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import move_data_to_device
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)
from typing_extensions import override

from zolightning.callbacks.result_line import not_scored, print_result
from zolightning.diagnostics.images import confusion_image

__all__ = ["HeldOutEvaluation", "LabelPredictor"]

Split = Literal["test", "val"]


@runtime_checkable
class LabelPredictor(Protocol):
    """What :class:`HeldOutEvaluation` needs from a module: predicted classes for a batch (LongTensor ``[B]``)."""

    def predict_labels(self, batch: Any) -> Tensor: ...


class HeldOutEvaluation(Callback):
    """Accuracy on a held-out split at the start of training (before any update) and at its end, also when the run is
    interrupted (Ctrl-C, an exception): the summary then says where it stopped.

    A fit that ends before its first step (a callback set ``trainer.should_stop`` at the start, as
    ``ZOLearningRateFinder(stop_after=True)`` does) has nothing to compare: the split is not evaluated at all, and
    one line says so. The first evaluation therefore runs when the first training epoch starts, after every
    callback's ``on_train_start``.

    Args:
        split: ``"test"`` (default) evaluates the data module's ``test_dataloader()``; ``"val"`` its
            ``val_dataloader()`` (or, without a data module, the Trainer's validation loader).
        max_batches: evaluate at most this many batches (default ``None``: the whole split).
        prefix: the logged names are ``{prefix}/accuracy_before``, ``{prefix}/accuracy_after`` and
            ``{prefix}/accuracy_gain`` (after − before; default ``"heldout"``).
        verbose: print a one-line before → after summary at the end of training (default ``True``).

    Accuracies are fractions in [0, 1]. They are logged with every logger's ``log_metrics`` (at the current
    ``global_step``), stored in ``trainer.callback_metrics`` and kept as :attr:`accuracy_before` /
    :attr:`accuracy_after`. The final accuracy is also logged as ``hp_metric`` (TensorBoard's hparams tab compares
    runs by it), with ``{prefix}/class_accuracy/<class>`` per class, and loggers that take images (TensorBoard) get
    ``{prefix}/confusion_matrix`` before and after (rows: true classes; columns: predictions). Class names come from
    the data module's ``class_names`` when it has them. Evaluation runs in eval mode under ``torch.no_grad()``; every submodule's train/eval
    flag is restored afterwards and no weight changes.

    The module must implement :class:`LabelPredictor` (see this module's docstring); the data module must be able
    to give the split's loader once set up for fitting.
    """

    def __init__(
        self, split: Split = "test", max_batches: int | None = None, prefix: str = "heldout", verbose: bool = True
    ) -> None:
        if split not in ("test", "val"):
            raise ValueError(f"`split` must be 'test' or 'val', got {split!r}.")
        if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                        or max_batches < 1):
            raise ValueError(f"`max_batches` must be a positive integer or None, got {max_batches!r}.")
        if not isinstance(prefix, str) or not prefix or "/" in prefix:
            raise ValueError(f"`prefix` must be a non-empty string without '/', got {prefix!r}.")
        self.split = split
        self.max_batches = max_batches
        self.prefix = prefix
        self.verbose = verbose
        self.accuracy_before: float | None = None
        self.accuracy_after: float | None = None
        self.confusion: Tensor | None = None  # (C, C) counts of the latest evaluation
        self.labels: tuple[Tensor, Tensor, int] | None = None  # its (predicted, target, classes)
        self.examples: int = 0
        self._started_at: int | None = None  # global_step when this fit's training started
        self._before_pending = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(split=self.split, prefix=self.prefix)

    # ------------------------------------------------------------------------------------------------------ hooks

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.accuracy_before = self.accuracy_after = None
        self._started_at, self._before_pending = trainer.global_step, True

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Here rather than in `on_train_start`: a callback after this one may end the fit there (a finder's
        # `stop_after`), and a split scored for a run that takes no step is time spent on nothing.
        if not self._before_pending:
            return
        self._before_pending = False
        if not trainer.should_stop:
            self.accuracy_before = self.evaluate(trainer, pl_module)
            self._log(trainer, {"accuracy_before": self.accuracy_before})

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._took_no_step(trainer):
            self._report_not_scored(trainer)
            return
        self._finish(trainer, pl_module, interrupted=False)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # Ctrl-C (or a failure) after the first evaluation: report where the run got to, with the weights it has.
        if self.accuracy_before is not None and self.accuracy_after is None and isinstance(exception, KeyboardInterrupt):
            if self._took_no_step(trainer):
                self._report_not_scored(trainer)
                return
            self._finish(trainer, pl_module, interrupted=True)

    def _took_no_step(self, trainer: Trainer) -> bool:
        return self._started_at is not None and trainer.global_step == self._started_at

    def _report_not_scored(self, trainer: Trainer) -> None:
        if self.verbose:
            print_result(trainer, f"Held-out {self.split} accuracy: {not_scored(self.split)}.")

    def _finish(self, trainer: Trainer, pl_module: LightningModule, interrupted: bool) -> None:
        self.accuracy_after = self.evaluate(trainer, pl_module)
        metrics = {"accuracy_after": self.accuracy_after, **self._class_accuracies(trainer)}
        if self.accuracy_before is not None:
            metrics["accuracy_gain"] = self.accuracy_after - self.accuracy_before
        self._log(trainer, metrics)
        for logger in trainer.loggers:
            logger.log_metrics({"hp_metric": self.accuracy_after}, step=trainer.global_step)
        if self.verbose:
            print_result(trainer, self.summary(trainer.global_step) + (" (interrupted)" if interrupted else ""))

    def _class_accuracies(self, trainer: Trainer) -> dict[str, float]:
        assert self.confusion is not None
        counts = self.confusion.float()
        recall = counts.diagonal() / counts.sum(dim=1).clamp_min(1.0)
        names = list(getattr(trainer.datamodule, "class_names", None) or range(len(recall)))
        return {f"class_accuracy/{name}": float(value) for name, value in zip(names, recall)}

    def summary(self, steps: int | None = None) -> str:
        """``"Held-out test accuracy (1000 examples): 21.30% -> 64.20% (+42.90 points) after 300 steps"``."""
        before = "n/a" if self.accuracy_before is None else f"{100 * self.accuracy_before:.2f}%"
        after = "n/a" if self.accuracy_after is None else f"{100 * self.accuracy_after:.2f}%"
        text = f"Held-out {self.split} accuracy ({self.examples} examples): {before} -> {after}"
        if self.accuracy_before is not None and self.accuracy_after is not None:
            text += f" ({100 * (self.accuracy_after - self.accuracy_before):+.2f} points)"
        if steps is not None:
            text += f" after {steps} steps"
        return text

    # ------------------------------------------------------------------------------------------------- evaluation

    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> float:
        """Accuracy (fraction) of ``pl_module`` on the split, without changing its weights or train flags."""
        if not isinstance(pl_module, LabelPredictor):
            raise TypeError(
                f"HeldOutEvaluation needs the module to implement `predict_labels(batch) -> LongTensor [B]` (and "
                f"optionally `target_labels(batch)`); {type(pl_module).__name__} does not."
            )
        loader = self._dataloader(trainer)
        flags = [(module, module.training) for module in pl_module.modules()]
        predictions: list[Tensor] = []
        targets: list[Tensor] = []
        pl_module.eval()
        try:
            with torch.no_grad():
                for index, batch in enumerate(loader):
                    if self.max_batches is not None and index >= self.max_batches:
                        break
                    batch = move_data_to_device(batch, pl_module.device)
                    predicted = pl_module.predict_labels(batch)
                    target = self._targets(pl_module, batch).to(predicted.device)
                    if predicted.shape != target.shape:
                        raise ValueError(
                            f"`predict_labels` returned shape {tuple(predicted.shape)} but the targets have shape "
                            f"{tuple(target.shape)}; it must return one class index per example."
                        )
                    predictions.append(predicted.cpu())
                    targets.append(target.cpu())
        finally:
            for module, training in flags:
                module.training = training
        if not targets:
            raise ValueError(f"The {self.split} dataloader gave no examples to evaluate.")
        predicted, target = torch.cat(predictions), torch.cat(targets)
        classes = int(getattr(pl_module, "num_classes", 0) or max(int(predicted.max()), int(target.max())) + 1)
        self.confusion = multiclass_confusion_matrix(predicted, target, num_classes=classes)
        self.labels = (predicted, target, classes)
        self.examples = target.numel()
        self._log_image(trainer, self.confusion)
        return float((predicted == target).float().mean())

    def scores(self) -> dict[str, float]:
        """Accuracy, macro-F1 and balanced accuracy (fractions in [0, 1]) of the latest :meth:`evaluate`, by
        torchmetrics' functional API: micro accuracy, macro F1 and macro accuracy (recall), where a class with no
        example and no prediction is left out of the macro averages and a class predicted but absent counts 0."""
        if self.labels is None:
            raise RuntimeError("No evaluation yet: call `evaluate(trainer, module)` first.")
        predicted, target, classes = self.labels
        return {
            "accuracy": float(multiclass_accuracy(predicted, target, classes, average="micro")),
            "macro_f1": float(multiclass_f1_score(predicted, target, classes, average="macro")),
            "balanced_accuracy": float(multiclass_accuracy(predicted, target, classes, average="macro")),
        }

    def _log_image(self, trainer: Trainer, confusion: Tensor) -> None:
        for logger in getattr(trainer, "loggers", []):
            add_image = getattr(getattr(logger, "experiment", None), "add_image", None)
            if callable(add_image):
                add_image(f"{self.prefix}/confusion_matrix", confusion_image(confusion), trainer.global_step)

    def _dataloader(self, trainer: Trainer) -> Iterable[Any]:
        datamodule = trainer.datamodule
        if datamodule is not None:
            return getattr(datamodule, f"{self.split}_dataloader")()
        if self.split == "val" and trainer.val_dataloaders is not None:
            loaders = trainer.val_dataloaders
            return loaders[0] if isinstance(loaders, Sequence) else loaders
        raise ValueError(
            f"HeldOutEvaluation(split={self.split!r}) needs a data module with `{self.split}_dataloader()`: pass "
            "`datamodule=` to `trainer.fit`" + (" (or validation dataloaders)." if self.split == "val" else ".")
        )

    @staticmethod
    def _targets(pl_module: LightningModule, batch: Any) -> Tensor:
        target_labels = getattr(pl_module, "target_labels", None)
        if callable(target_labels):
            return target_labels(batch)
        if isinstance(batch, Mapping) and "labels" in batch:
            return batch["labels"]
        if isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) >= 2:
            return batch[1]
        raise TypeError(
            f"Cannot find the labels of a {type(batch).__name__} batch: give the module a `target_labels(batch)` "
            "method, or use dict batches with 'labels' or (inputs, labels) pairs."
        )

    def _log(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        named = {f"{self.prefix}/{name}": value for name, value in metrics.items()}
        for name, value in named.items():
            trainer.callback_metrics[name] = torch.tensor(value)
        for logger in trainer.loggers:
            logger.log_metrics(named, step=trainer.global_step)
