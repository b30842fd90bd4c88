"""``ZOClassifier``: what every classification task shares — loss, metrics, and the held-out evaluation protocol.

A subclass implements :meth:`ZOClassifier.logits` (``batch → [B, C]``); batches are dicts with ``labels``
(LongTensor ``[B]``) as :class:`~zolightning.tasks.TextClassificationDataModule` makes them.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
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
    ``validation_step`` / ``test_step`` log, per epoch, for ``split`` in ``val`` / ``test`` (torchmetrics, fractions
    in [0, 1]):

    * ``{split}/loss``: mean cross-entropy;
    * ``{split}/acc``: micro accuracy, the fraction of examples right;
    * ``{split}/macro_f1``: F1 per class, averaged with equal weight (``MulticlassF1Score(average="macro")``);
    * ``{split}/balanced_acc``: recall per class, averaged with equal weight (``MulticlassAccuracy(average=
      "macro")``); a constant majority-class guess scores ``1/C`` here whatever the class sizes.

    (torchmetrics leaves a class out of both macro averages when it is neither in the targets nor predicted.)
    :attr:`val_metrics` / :attr:`test_metrics` hold the metric objects, keyed ``acc``, ``macro_f1``,
    ``balanced_acc``. :meth:`predict_labels` / :meth:`target_labels` serve
    :class:`zolightning.callbacks.HeldOutEvaluation`.
    """

    def __init__(self, num_classes: int, zo: ZOConfig | None = None) -> None:
        super().__init__(zo=zo)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer of at least 2, got {num_classes!r}.")
        self.num_classes = num_classes
        self.val_metrics = self.make_metrics(num_classes)
        self.test_metrics = self.make_metrics(num_classes)

    @staticmethod
    def make_metrics(num_classes: int) -> MetricCollection:
        """The evaluation metrics for ``C`` classes, each fed predicted labels ``[B]`` and targets ``[B]``."""
        # compute_groups=False: every metric keeps its own state. Shared groups update only a group's first metric
        # and copy its state into the others when the collection is iterated; we log the members one by one, so
        # their own state is simpler to trust, and three sets of per-class counts cost nothing.
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "macro_f1": MulticlassF1Score(num_classes, average="macro"),
                "balanced_acc": MulticlassAccuracy(num_classes, average="macro"),
            },
            compute_groups=False,
        )

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

    def _evaluate(self, batch: Batch, split: str, metrics: MetricCollection, prog_bar: bool) -> None:
        logits = self.logits(batch)
        size = batch["labels"].shape[0]
        self.log(f"{split}/loss", F.cross_entropy(logits, batch["labels"]), prog_bar=prog_bar, batch_size=size)
        metrics.update(logits.argmax(dim=-1), batch["labels"])
        for name, metric in metrics.items():
            # Logging the metric object (not a value) makes Lightning compute it over the whole epoch, then reset it.
            self.log(f"{split}/{name}", metric, prog_bar=prog_bar and name == "acc", batch_size=size)

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics, prog_bar=True)

    @override
    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics, prog_bar=False)

    def predict_labels(self, batch: Batch) -> Tensor:
        """Predicted class per example (LongTensor ``[B]``): the held-out evaluation protocol."""
        return self.logits(batch).argmax(dim=-1)

    def target_labels(self, batch: Batch) -> Tensor:
        """True class per example (LongTensor ``[B]``)."""
        return batch["labels"]
