"""``ZOProgressBar``: a training bar that counts optimizer steps against ``max_steps`` and shows the ZO figures."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from typing_extensions import override

# The step's figures the bar shows, by logged name → short label.
SHOWN = {"train/loss": "loss", "train/projected_grad": "g", "train/lr": "lr", "train/steps_per_sec": "it/s"}


class ZOProgressBar(TQDMProgressBar):
    """One bar for the whole run when ``max_steps`` is set: ``step 1234/2000`` (the bar Lightning draws per epoch reads
    ``Epoch 68/-2`` then), with the loss, the projected gradient g, the learning rate and steps per second. Without
    ``max_steps`` it is Lightning's per-epoch bar. The command line installs it.

    Args:
        refresh_rate: redraw every this many steps (default 1).
    """

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)

    @staticmethod
    def _steps(trainer: pl.Trainer) -> int | None:
        return trainer.max_steps if trainer.max_steps is not None and trainer.max_steps > 0 else None

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        total = self._steps(trainer)
        if total is None:
            super().on_train_epoch_start(trainer)
            return
        bar = self.train_progress_bar
        if bar.total != total:  # first epoch: one bar for every step of the run
            bar.reset(total=total)
            bar.initial = trainer.global_step
            bar.n = trainer.global_step
        bar.set_description("step")

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._steps(trainer) is None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar = self.train_progress_bar
        if not bar.disable and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._steps(trainer) is None:
            super().on_train_epoch_end(trainer, pl_module)

    @override
    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        logged = trainer.callback_metrics
        shown = {label: f"{float(logged[name]):.4g}" for name, label in SHOWN.items() if name in logged}
        rest = {k: v for k, v in metrics.items() if k not in ("v_num", *SHOWN) and not k.startswith("train/")}
        return {**shown, **rest}
