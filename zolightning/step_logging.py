"""``StepLogging``: what a ZO module logs, and how values logged inside its evaluations reach the logger once."""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.data import extract_batch_size
from torch import Tensor
from typing_extensions import override

from zolightning.engine.measurement import Measurement


class StepLogging(LightningModule):
    """Mixed into :class:`~zolightning.ZOLightningModule`: ``self.log`` inside ``training_step`` is held during the
    step's evaluations and replayed once (numbers averaged), and each update logs its measurement's figures:
    ``train/loss``, ``train/projected_grad``, ``train/lr``, ``train/eps``, ``train/time_forward``,
    ``train/time_perturb_update``, ``train/steps_per_sec``, ``train/samples_per_sec`` and ``train/nonfinite_steps``."""

    _zo_log_buffer: list[tuple[str, Any, dict[str, Any]]] | None
    _zo_update_started: float
    _zo_update_samples: int

    def _log_step(self, result: Measurement, optimizer: torch.optim.Optimizer) -> None:
        total = time.perf_counter() - self._zo_update_started
        metrics = {
            "train/loss": result.loss,
            "train/projected_grad": result.projected_gradient,
            "train/lr": float(optimizer.param_groups[0]["lr"]),
            "train/eps": result.eps,
            "train/time_forward": result.forward_seconds,
            "train/time_perturb_update": max(total - result.forward_seconds, 0.0),
            "train/steps_per_sec": 1.0 / total if total > 0 else 0.0,
            "train/nonfinite_steps": float(self.zo_engine.nonfinite.total),  # type: ignore[attr-defined]
            "train/tie_share": self.zo_engine.ties.share,  # type: ignore[attr-defined]
        }
        if result.prefix is not None:
            metrics["train/prefix_reuse"] = 1.0 if result.prefix.reused_evaluations else 0.0
            metrics["train/prefix_layers_skipped"] = float(result.prefix.skipped_layers)
        if self._zo_update_samples:
            metrics["train/samples_per_sec"] = self._zo_update_samples / total if total > 0 else 0.0
        for name, value in metrics.items():
            shown = name in ("train/loss", "train/projected_grad")
            LightningModule.log(self, name, value, prog_bar=shown, on_step=True, on_epoch=False, batch_size=1)

    def _batch_size(self, batch: Any) -> int | None:
        if batch is None:
            return None
        try:
            return int(extract_batch_size(batch))
        except Exception:  # noqa: BLE001 - a batch without tensors just has no throughput figure
            return None

    @override
    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """As ``LightningModule.log``; inside the ZO evaluations the value is held and logged once per step."""
        if self._zo_log_buffer is not None:
            if args:
                raise TypeError("Inside a ZO training_step, pass `self.log` options by keyword.")
            self._zo_log_buffer.append((name, value, kwargs))
            return
        super().log(name, value, *args, **kwargs)

    def _replay_logs(self, logged: list[tuple[str, Any, dict[str, Any]]]) -> None:
        """Log each name held during the evaluations once: numbers averaged over the evaluations, other objects
        (e.g. torchmetrics metrics, updated by the user's code) as last given."""
        grouped: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
        for name, value, kwargs in logged:
            grouped.setdefault(name, []).append((value, kwargs))
        for name, entries in grouped.items():
            values = [value for value, _ in entries]
            kwargs = entries[-1][1]
            if all(isinstance(v, (Tensor, int, float)) and torch.as_tensor(v).numel() == 1 for v in values):
                value: Any = torch.stack([torch.as_tensor(v, dtype=torch.float32).detach().cpu() for v in values]).mean()
            else:
                value = values[-1]
            LightningModule.log(self, name, value, **kwargs)
