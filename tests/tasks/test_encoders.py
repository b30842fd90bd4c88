"""Encoders and tokenizers of the tasks (``zolightning/tasks/encoders.py``)."""

import torch

from zolightning.tasks.encoders import mean_pool


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]
