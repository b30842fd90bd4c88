"""ZOClassifier's epoch-level metrics (accuracy, macro-F1, balanced accuracy) against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from torch import Tensor
from torch.utils.data import DataLoader

from tests.conftest import trainer_kwargs
from zolightning.tasks import ZOClassifier

# 12 examples, 3 classes. Per class (tp, fn, fp):
#   class 0: 6 examples, 5 right, 1 → 2;   predicted 0 once wrongly (a class-1 example):  (5, 1, 1)
#   class 1: 3 examples, 2 right, 1 → 0;   predicted 1 twice wrongly (class-2 examples):  (2, 1, 2)
#   class 2: 3 examples, 1 right, 2 → 1;   predicted 2 once wrongly (a class-0 example):  (1, 2, 1)
TARGETS = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDS = [0, 0, 0, 0, 0, 2, 1, 1, 0, 2, 1, 1]
ACCURACY = 8 / 12
BALANCED_ACCURACY = (5 / 6 + 2 / 3 + 1 / 3) / 3  # mean recall tp / (tp + fn) = 11/18
# F1 = 2tp / (2tp + fp + fn): 10/12, 4/7, 2/5.
MACRO_F1 = (10 / 12 + 4 / 7 + 2 / 5) / 3  # = 379/630


class FixedPredictions(ZOClassifier):
    """Logits that put the batch's ``preds`` first: the metrics see exactly :data:`PREDS`."""

    def __init__(self) -> None:
        super().__init__(num_classes=3)
        self.bias = torch.nn.Parameter(torch.zeros(3))

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.nn.functional.one_hot(batch["preds"], 3).float() * 5 + self.bias


def loader(preds: list[int], targets: list[int]) -> DataLoader:
    rows = [{"preds": torch.tensor(p), "labels": torch.tensor(t)} for p, t in zip(preds, targets)]
    return DataLoader(rows, batch_size=4)  # 3 batches: an epoch value, not the last batch's (which is 1/4 right)


def test_the_hand_computed_values_are_distinct():
    # Otherwise a test could pass with the metrics swapped.
    assert len({round(v, 6) for v in (ACCURACY, BALANCED_ACCURACY, MACRO_F1)}) == 3


def test_validation_logs_epoch_level_accuracy_macro_f1_and_balanced_accuracy():
    model = FixedPredictions()
    trainer = Trainer(**trainer_kwargs())
    (results,) = trainer.validate(model, loader(PREDS, TARGETS), verbose=False)
    assert set(results) == {"val/loss", "val/acc", "val/macro_f1", "val/balanced_acc"}
    assert results["val/acc"] == pytest.approx(ACCURACY)
    assert results["val/macro_f1"] == pytest.approx(MACRO_F1)
    assert results["val/balanced_acc"] == pytest.approx(BALANCED_ACCURACY)
    # The metrics are reset after the epoch: a perfect second run scores 1, not a running mix of both runs.
    (again,) = trainer.validate(model, loader(TARGETS, TARGETS), verbose=False)
    assert again["val/acc"] == again["val/macro_f1"] == again["val/balanced_acc"] == pytest.approx(1.0)


def test_test_logs_the_same_metrics_under_test():
    (results,) = Trainer(**trainer_kwargs()).test(FixedPredictions(), loader(PREDS, TARGETS), verbose=False)
    assert set(results) == {"test/loss", "test/acc", "test/macro_f1", "test/balanced_acc"}
    assert (results["test/acc"], results["test/macro_f1"], results["test/balanced_acc"]) == pytest.approx(
        (ACCURACY, MACRO_F1, BALANCED_ACCURACY))


def test_a_majority_class_guess_scores_one_over_c_in_balanced_accuracy():
    metrics = FixedPredictions.make_metrics(3)
    metrics.update(torch.zeros(12, dtype=torch.long), torch.tensor(TARGETS))
    values = metrics.compute()
    assert values["acc"] == pytest.approx(0.5)  # half the examples are class 0
    assert values["balanced_acc"] == pytest.approx(1 / 3)
    assert values["macro_f1"] == pytest.approx((2 * 6 / (2 * 6 + 6)) / 3)  # only class 0 scores: F1 = 2/3
