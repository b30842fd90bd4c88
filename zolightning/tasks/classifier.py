"""``ZOClassifier``: what every classification task shares — loss, metrics, and the held-out evaluation protocol.

A subclass implements :meth:`ZOClassifier.logits` (``batch → [B, C]``); batches are dicts with ``labels``
(LongTensor ``[B]``) as :class:`~zolightning.tasks.TextClassificationDataModule` makes them.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from zolightning.config import ZOConfig
from zolightning.module import ZOLightningModule
from zolightning.tasks.batching import Batch

__all__ = ["ZOClassifier"]


class ZOClassifier(ZOLightningModule, metaclass=ABCMeta):
    """Base of the classification tasks.

    Args:
        num_classes: ``C``, checked against the data module's ``num_classes`` at setup (when it has one).
        zo: the ZO step's settings.

    ``training_step`` returns the mean cross-entropy of :meth:`training_logits` (what ZO evaluates at θ ± εz);
    ``validation_step`` / ``test_step`` log ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc`` (micro accuracy,
    torchmetrics, a fraction); :meth:`predict_labels` / :meth:`target_labels` serve
    :class:`zolightning.callbacks.HeldOutEvaluation`.
    """

    def __init__(self, num_classes: int, zo: ZOConfig | None = None) -> None:
        super().__init__(zo=zo)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer of at least 2, got {num_classes!r}.")
        self.num_classes = num_classes
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes, average="micro")

    @abstractmethod
    def logits(self, batch: Batch) -> Tensor:
        """Class scores ``[B, C]`` for a batch."""

    def training_logits(self, batch: Batch) -> Tensor:
        """Class scores used by ``training_step`` (default :meth:`logits`; tasks may reuse work here)."""
        return self.logits(batch)

    @override
    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None) if datamodule is not None else None
        if data_classes is not None and data_classes != self.num_classes:
            raise ValueError(
                f"The model has num_classes={self.num_classes} but the data module's dataset has {data_classes} "
                f"classes ({getattr(datamodule, 'class_names', '?')}); make the model's classes match the data."
            )

    @override
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Mean cross-entropy of the batch."""
        return F.cross_entropy(self.training_logits(batch), batch["labels"])

    def _evaluate(self, batch: Batch, split: str, metric: MulticlassAccuracy, prog_bar: bool) -> None:
        logits = self.logits(batch)
        size = batch["labels"].shape[0]
        self.log(f"{split}/loss", F.cross_entropy(logits, batch["labels"]), prog_bar=prog_bar, batch_size=size)
        metric(logits.argmax(dim=-1), batch["labels"])
        self.log(f"{split}/acc", metric, prog_bar=prog_bar, batch_size=size)

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_accuracy, prog_bar=True)

    @override
    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_accuracy, prog_bar=False)

    def predict_labels(self, batch: Batch) -> Tensor:
        """Predicted class per example (LongTensor ``[B]``): the held-out evaluation protocol."""
        return self.logits(batch).argmax(dim=-1)

    def target_labels(self, batch: Batch) -> Tensor:
        """True class per example (LongTensor ``[B]``)."""
        return batch["labels"]
