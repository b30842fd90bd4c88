"""Shared test helpers: quiet, fast Trainer settings and small models."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

# The test models are tiny: a second thread buys nothing, and with ddp_spawn ranks (or anything else) sharing the
# cores, OpenMP threads waiting on each other make small ops up to 50x slower.
torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*litlogger.*")


def trainer_kwargs(**overrides: Any) -> dict[str, Any]:
    """Trainer arguments for tests: CPU, no progress bar, no model summary, no logger or checkpoints unless asked."""
    kwargs: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def quadratic() -> tuple[torch.Tensor, torch.Tensor]:
    """A well-conditioned SPD matrix A (20×20) and a starting point x0 for f(x) = ½ xᵀAx (minimum 0 at x = 0)."""
    generator = torch.Generator().manual_seed(0)
    basis = torch.randn(20, 20, generator=generator)
    matrix = basis @ basis.T / 20 + torch.eye(20)
    return matrix, torch.randn(20, generator=generator)


def count_noise_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every noise pass over a dense direction from now on: a z drawn into a buffer
    (``fill_noise_``, torch or counter) or generated inside a fused move or update (counter noise). Returns the list
    the sizes are appended to, in elements."""
    import zolightning.functional.directions as directions

    passes: list[int] = []
    for name in ("fill_noise_", "add_counter_noise_", "counter_sgd_update_"):
        original = getattr(directions, name)

        def counted(tensor, *args, _original=original, **kwargs):
            passes.append(tensor.numel())
            return _original(tensor, *args, **kwargs)

        monkeypatch.setattr(directions, name, counted)
    return passes
