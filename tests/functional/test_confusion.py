"""Scores from a confusion matrix agree with torchmetrics, including classes that are absent or never predicted."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

from zolightning.functional.confusion import confusion_image, confusion_scores


@pytest.mark.parametrize("seed", range(6))
def test_scores_match_torchmetrics(seed):
    generator = torch.Generator().manual_seed(seed)
    classes = 4
    target = torch.randint(0, classes, (30,), generator=generator)
    predicted = torch.randint(0, classes, (30,), generator=generator)
    if seed % 2:  # class 3 absent from targets and predictions; class 2 predicted but absent from targets
        target[target >= 2] = 1
        predicted[predicted == 3] = 0
    scores = confusion_scores(multiclass_confusion_matrix(predicted, target, classes))
    assert scores["accuracy"] == pytest.approx(float(multiclass_accuracy(predicted, target, classes, average="micro")))
    assert scores["macro_f1"] == pytest.approx(float(multiclass_f1_score(predicted, target, classes, average="macro")))
    assert scores["balanced_accuracy"] == pytest.approx(
        float(multiclass_accuracy(predicted, target, classes, average="macro"))
    )


def test_image_shape_and_a_full_row_is_dark():
    image = confusion_image(torch.tensor([[5, 0], [0, 3]]), cell=4)
    assert image.shape == (3, 8, 8)
    assert image[:, 1:4, 1:4].mean() < image[:, 1:4, 5:8].mean()
