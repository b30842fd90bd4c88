"""A confusion matrix as a picture, for loggers that take images (TensorBoard's ``add_image``). Pure tensor code:
no plotting library needed."""

from __future__ import annotations

import torch
from torch import Tensor

# Each cell is drawn as a CELL × CELL square, shaded by the fraction of its row (true class) it holds.
CELL = 24


def confusion_image(matrix: Tensor, cell: int = CELL) -> Tensor:
    """An RGB image (3, C·cell, C·cell) of a (C, C) confusion matrix, rows = true classes, columns = predictions: white
    for 0, deep blue for a whole row, with a thin grey grid. Values are row-normalized, so each row reads as the share
    of that class's examples given each label; the diagonal is the per-class accuracy."""
    counts = matrix.detach().float().cpu()
    if counts.dim() != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"A confusion matrix is square (C, C), got shape {tuple(counts.shape)}.")
    shares = counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)
    blue = torch.tensor([0.03, 0.19, 0.42])  # the colour of a full row
    rgb = 1.0 - shares[None] * (1.0 - blue[:, None, None])  # (3, C, C): white → blue
    image = rgb.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)
    image[:, ::cell, :] = 0.75
    image[:, :, ::cell] = 0.75
    return image.clamp(0.0, 1.0)


def confusion_scores(matrix: Tensor) -> dict[str, float]:
    """Accuracy, macro-F1 and balanced accuracy (fractions in [0, 1]) of a (C, C) confusion matrix (rows = true
    classes), the same definitions as torchmetrics' ``MulticlassAccuracy(average="micro")``,
    ``MulticlassF1Score(average="macro")`` and ``MulticlassAccuracy(average="macro")``: a class with no example and no
    prediction is left out of both macro averages, as torchmetrics does; a class predicted but absent counts 0."""
    counts = matrix.detach().double().cpu()
    true_positive = counts.diagonal()
    support = counts.sum(dim=1)
    predicted = counts.sum(dim=0)
    recall = true_positive / support.clamp_min(1.0)
    f1 = 2 * true_positive / (support + predicted).clamp_min(1.0)
    present = (support + predicted) > 0
    return {
        "accuracy": float(true_positive.sum() / counts.sum().clamp_min(1.0)),
        "macro_f1": float(f1[present].mean()) if bool(present.any()) else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if bool(present.any()) else 0.0,
    }
