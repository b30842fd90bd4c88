"""Padding tokenized examples into batches."""

from __future__ import annotations

import pytest
import torch

from zolightning.tasks.batching import PadCollator, TokenizedTexts


def test_right_and_left_padding():
    data = TokenizedTexts([[5, 6, 7], [8]], [1, 0])
    items = [data[0], data[1]]
    right = PadCollator(pad_token_id=0)(items)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert right["labels"].tolist() == [1, 0] and right["labels"].dtype == torch.long
    left = PadCollator(pad_token_id=9, side="left")(items)
    assert left["input_ids"].tolist() == [[5, 6, 7], [9, 9, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 token sequences but 1 labels"):
        TokenizedTexts([[1], [2]], [0])
    with pytest.raises(ValueError, match="'right' or 'left'"):
        PadCollator(0, side="middle")  # type: ignore[arg-type]
