"""Pictures of a run for loggers that take images (TensorBoard's ``add_image``), in plain tensor code (no plotting
library): a confusion matrix, and which block was active at each step coloured by its projected gradient."""

from __future__ import annotations

import math

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


# Three colour stops (dark violet → teal → yellow), interpolated linearly: small |g| dark, large |g| bright.
_STOPS = torch.tensor([[68.0, 1.0, 84.0], [33.0, 145.0, 140.0], [253.0, 231.0, 37.0]])
_INACTIVE = torch.tensor([235.0, 235.0, 235.0])


def colour_scale(unit: Tensor) -> Tensor:
    """RGB (…, 3) in [0, 255] for values in [0, 1] (…)."""
    position = unit.clamp(0, 1) * (len(_STOPS) - 1)
    low = position.floor().long().clamp(max=len(_STOPS) - 2)
    fraction = (position - low).unsqueeze(-1)
    return _STOPS[low] * (1 - fraction) + _STOPS[low + 1] * fraction


def activity_image(magnitudes: Tensor, cell_height: int = 8, cell_width: int = 2) -> Tensor:
    """An image of block activity: one row per block (top = block 0), one column per step (left = oldest).

    Args:
        magnitudes: (blocks × steps) |projected gradient| where the block was active, NaN where it was not.
        cell_height, cell_width: pixels per block and per step.

    Returns:
        uint8 (H × W × 3), H = blocks·cell_height, W = steps·cell_width. Colour is log10 |g| scaled between the
        smallest and largest positive value shown; inactive cells are light grey; |g| = 0 is the darkest colour.
    """
    if magnitudes.dim() != 2:
        raise ValueError(f"`magnitudes` must be (blocks × steps), got shape {tuple(magnitudes.shape)}.")
    values = magnitudes.detach().double().cpu()
    active = ~values.isnan()
    positive = values[active & (values > 0)]
    logs = torch.zeros_like(values)
    if positive.numel():
        low, high = math.log10(float(positive.min())), math.log10(float(positive.max()))
        spread = high - low if high > low else 1.0
        logs = ((values.clamp(min=float(positive.min())).log10() - low) / spread).nan_to_num(0.0)
    rgb = colour_scale(logs.float())
    rgb[~active] = _INACTIVE
    rgb = rgb.repeat_interleave(cell_height, dim=0).repeat_interleave(cell_width, dim=1)
    return rgb.round().to(torch.uint8)
