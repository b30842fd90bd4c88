"""Tokenized examples and the collate function that pads them into batches.

A batch is a dict of tensors: ``input_ids`` (LongTensor ``[B, T]``), ``attention_mask`` (LongTensor ``[B, T]``, 1 on
real tokens, 0 on padding) and ``labels`` (LongTensor ``[B]``), where ``T`` is the longest sequence in the batch
(dynamic padding: never more than the data module's ``max_length``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["PadCollator", "TokenizedTexts"]

Batch = dict[str, Tensor]


class TokenizedTexts(Dataset[dict[str, object]]):
    """Token ids and labels of a split; item ``i`` is ``{"input_ids": list[int], "label": int}``.

    Args:
        input_ids: one list of token ids per example (already truncated).
        labels: one class index per example.
    """

    def __init__(self, input_ids: Sequence[Sequence[int]], labels: Sequence[int]) -> None:
        if len(input_ids) != len(labels):
            raise ValueError(f"{len(input_ids)} token sequences but {len(labels)} labels.")
        self.input_ids = [list(ids) for ids in input_ids]
        self.labels = [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, object]:
        return {"input_ids": self.input_ids[index], "label": self.labels[index]}


class PadCollator:
    """Pads a list of :class:`TokenizedTexts` items to the batch's longest sequence.

    Args:
        pad_token_id: the id written into padded positions (their ``attention_mask`` is 0).
        side: ``"right"`` (default; encoders) or ``"left"`` (causal LMs, so the last position is the last real
            token of every row).
    """

    def __init__(self, pad_token_id: int, side: Literal["right", "left"] = "right") -> None:
        if side not in ("right", "left"):
            raise ValueError(f"`side` must be 'right' or 'left', got {side!r}.")
        self.pad_token_id = int(pad_token_id)
        self.side = side

    def __call__(self, items: Sequence[dict[str, object]]) -> Batch:
        lengths = [len(item["input_ids"]) for item in items]  # type: ignore[arg-type]
        width = max(lengths)
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (item, length) in enumerate(zip(items, lengths)):
            ids = torch.as_tensor(item["input_ids"], dtype=torch.long)
            span = slice(0, length) if self.side == "right" else slice(width - length, width)
            input_ids[row, span] = ids
            attention_mask[row, span] = 1
        labels = torch.as_tensor([item["label"] for item in items], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
