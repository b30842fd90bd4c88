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
