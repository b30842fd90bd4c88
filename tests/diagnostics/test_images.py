"""The images a run logs: the block-activity image (layout, colours of active and inactive cells) and the confusion
matrix."""

from __future__ import annotations

import math

import pytest
import torch

from zolightning.diagnostics.images import activity_image, confusion_image


def test_rows_are_blocks_columns_are_steps_and_inactive_cells_are_grey():
    nan = math.nan
    magnitudes = torch.tensor([[1.0, nan, nan], [nan, 100.0, nan], [nan, nan, 10.0]])
    image = activity_image(magnitudes, cell_height=2, cell_width=3)
    assert image.shape == (6, 9, 3) and image.dtype == torch.uint8
    grey = torch.tensor([235, 235, 235], dtype=torch.uint8)
    assert torch.equal(image[0, 3], grey) and torch.equal(image[2, 0], grey)
    smallest, largest, middle = image[0, 0].int(), image[2, 3].int(), image[4, 6].int()
    assert largest.sum() > middle.sum() > smallest.sum()  # brighter for larger |g|
    assert torch.equal(image[0, 0], image[1, 2])  # a cell is uniform


def test_a_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="blocks × steps"):
        activity_image(torch.zeros(3))


def test_image_shape_and_a_full_row_is_dark():
    image = confusion_image(torch.tensor([[5, 0], [0, 3]]), cell=4)
    assert image.shape == (3, 8, 8)
    assert image[:, 1:4, 1:4].mean() < image[:, 1:4, 5:8].mean()
