"""Runs with a trajectory log, shared by the trajectory tests (module-level, so that ``ddp_spawn`` can pickle them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy

from tests.conftest import trainer_kwargs
from tests.ddp_helpers import COLLECTIVE_TIMEOUT, STRUCTURES, Interleaved, Record, Regressor
from zolightning.callbacks import TrajectoryLog


def train_logged(
    folder: Path, steps: int = 6, structure: str = "dense", devices: int = 1, optimizer: str | None = None,
    ckpt_path: Path | None = None, log: TrajectoryLog | None = None, precision: str | None = None,
    batch_size: int = 8, **zo: Any,
) -> tuple[Regressor, Path, Trainer]:
    """Train ``Regressor`` for ``steps`` updates with a :class:`TrajectoryLog` at ``folder/run.zot``; return the
    module, the log's path and the trainer. Under DDP rank 0's weights are at ``folder/rank0.pt`` (``Record``)."""
    folder.mkdir(parents=True, exist_ok=True)
    log = log if log is not None else TrajectoryLog(folder / "run.zot")
    strategy = DDPStrategy(start_method="spawn", timeout=COLLECTIVE_TIMEOUT) if devices > 1 else "auto"
    extra = dict(precision=precision) if precision else {}
    trainer = Trainer(
        max_steps=steps, strategy=strategy, use_distributed_sampler=False,
        callbacks=[*STRUCTURES[structure](), log, Record(folder)],
        **trainer_kwargs(devices=devices, default_root_dir=str(folder), **extra),
    )
    module = make_module(optimizer, precision, **zo)
    trainer.fit(module, datamodule=Interleaved(batch_size), ckpt_path=ckpt_path)
    return module, log.path or folder / "run.zot", trainer


def make_module(optimizer: str | None = None, precision: str | None = None, **zo: Any) -> Regressor:
    """The run's module at its base weights (bf16 weights for ``precision="bf16-true"``)."""
    module = Regressor(optimizer=optimizer, **zo)
    return module.to(torch.bfloat16) if precision == "bf16-true" else module


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Every parameter bitwise equal."""
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


class SavedRegressor(Regressor):
    """A ``Regressor`` that saves its hyperparameters, as the task modules do, so that the replay CLI rebuilds it from
    the log's header alone."""

    def __init__(self, width: int = 16, zo: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
