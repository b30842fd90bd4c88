"""``ZODiagnostics``: see a ZO run from the inside, in TensorBoard (alignment, cosine, variance, per-block motion)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from zolightning.diagnostics.blocks import BlockActivity, BlockMotion, diagnostic_blocks
from zolightning.diagnostics.step_diagnosis import StepDiagnosis, measure_step, trainable_of
from zolightning.functional.blocks import check_granularity
from zolightning.functional.checks import check_int_at_least
from zolightning.module import ZOLightningModule
from zolightning.trainer_checks import FSDP2_STRATEGY, check_zo_callback, sharded_strategy_name

__all__ = ["ZODiagnostics"]


class ZODiagnostics(Callback):
    """Every ``every_n_steps`` steps, measure the coming step on a fixed probe batch (the first training batch) and log:

    - ``diagnostics/cosine``: the step's estimate against the true gradient (backprop on the probe batch);
    - ``diagnostics/alignment``: the fraction of the gradient's squared norm inside the perturbed subspace (the active
      block, the mask, the low-rank factors' span): MeZO-BCD v2's subspace alignment;
    - ``diagnostics/estimate_variance`` (and ``relative_variance``, over ‖g‖²) from ``extra_directions`` more directions;
    - ``diagnostics/projected_gradient_snr``: Σt² / Σ(p̂ − t)², the finite difference against the true directional
      derivative, and ``projected_gradient_rms``;
    - per block: ``diagnostics/update_norm/<block>`` and ``diagnostics/distance/<block>`` (from the initial weights),
      and the histogram ``diagnostics/block_update_norms``;
    - the image ``diagnostics/block_activity``: one row per block, one column per step (the last ``image_steps``),
      coloured by |projected gradient| where the block was active, grey where it was not.

    At the end of the fit and of a test, the final ``val*`` and ``test*`` metrics are logged again as ``hp/<name>``;
    the module registers them as columns of the run's one hparams header (:mod:`zolightning.run_hparams`).

    Args:
        every_n_steps: steps between measurements (default 50). Other steps cost nothing but one selection call.
        extra_directions: directions beyond the step's own for the variance (default 4; 2 forwards each).
        gradient: compute the true gradient for cosine, alignment and SNR (default ``True``). Its cost: one forward and
            one backward on the probe batch, and the trainable size in memory; skipped, with one log line, when it
            would not fit.
        granularity: blocks to report on when the structure has none of its own (default ``layer``).
        track_distance: keep a CPU copy of the initial trainable weights for the distances (default ``True``).
        image_steps: steps shown in the activity image (default 256).

    Under DDP, rank 0 measures on its own probe batch and logs once; the other ranks do nothing extra. Under FSDP2
    (``ModelParallelStrategy``) the forwards are collective, so every rank measures, each on its own first batch: the
    figures are those of the global probe batch (losses averaged over ranks, sums over every rank's shards; see
    :mod:`zolightning.diagnostics.step_diagnosis`), and rank 0 logs them.
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        extra_directions: int = 4,
        gradient: bool = True,
        granularity: str = "layer",
        track_distance: bool = True,
        image_steps: int = 256,
    ) -> None:
        check_int_at_least(every_n_steps, 1, "every_n_steps")
        check_int_at_least(extra_directions, 1, "extra_directions")
        check_int_at_least(image_steps, 1, "image_steps")
        check_granularity(granularity)
        self.every_n_steps = every_n_steps
        self.extra_directions = extra_directions
        self.gradient = bool(gradient)
        self.granularity = granularity
        self.track_distance = bool(track_distance)
        self.image_steps = image_steps
        self.measurements: list[StepDiagnosis] = []
        self._probe_batch: Any = None
        self._activity: BlockActivity | None = None
        self._motion: BlockMotion | None = None
        self._measured_step: int | None = None
        self._skip_reported = False
        self._every_rank = False

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_zo_callback("ZODiagnostics", "measures zeroth-order steps", trainer, pl_module, allow_fsdp2=True)
        # Sharded weights: the measurement's forwards and sums are collective, so every rank takes part.
        self._every_rank = sharded_strategy_name(trainer.strategy) == FSDP2_STRATEGY

    def _measures(self, trainer: pl.Trainer) -> bool:
        return trainer.is_global_zero or self._every_rank

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._measures(trainer):
            return
        assert isinstance(pl_module, ZOLightningModule)
        engine = pl_module.zo_engine
        tensors = trainable_of(engine)
        blocks = diagnostic_blocks(engine.structure, pl_module, self.granularity)
        self._activity = BlockActivity(blocks, tensors, self.image_steps)
        self._motion = BlockMotion(blocks, tensors, self.track_distance)

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self._measures(trainer) or self._motion is None:
            return
        assert isinstance(pl_module, ZOLightningModule)
        if self._probe_batch is None:
            self._probe_batch = batch
        step = trainer.global_step
        if step % self.every_n_steps or step == self._measured_step:
            return
        self._measured_step = step
        measurement = measure_step(
            pl_module.zo_engine,
            pl_module.zo_objective(self._probe_batch, 0),
            step,
            extra_directions=self.extra_directions,
            gradient=self.gradient,
        )
        self.measurements.append(measurement)
        self._motion.snapshot(measurement.active_names)
        if trainer.is_global_zero:
            self._log_measurement(trainer, measurement)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._measures(trainer) or self._activity is None or self._motion is None:
            return
        assert isinstance(pl_module, ZOLightningModule)
        result = pl_module.zo_engine.last
        if result is None or not result.updates or result.step != trainer.global_step - 1:
            return
        self._activity.record(pl_module.zo_structure, result.step, result.projected_gradient)
        norms = self._motion.update_norms() if result.step == self._measured_step else None
        if norms is None:
            return
        distances = self._motion.distances() or {}  # every rank, when the sums cross ranks
        if not trainer.is_global_zero:
            return
        metrics = {f"diagnostics/update_norm/{name}": value for name, value in norms.items()}
        metrics.update({f"diagnostics/distance/{name}": value for name, value in distances.items()})
        self._log_metrics(trainer, metrics, result.step)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_histogram") and norms:
                experiment.add_histogram("diagnostics/block_update_norms", torch.tensor(list(norms.values())), result.step)
        self._log_image(trainer, result.step)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._log_image(trainer, trainer.global_step)
            self._log_final_metrics(trainer)

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._log_final_metrics(trainer)

    # ----------------------------------------------------------------------------------------------- logging

    def _log_measurement(self, trainer: pl.Trainer, measurement: StepDiagnosis) -> None:
        stats = measurement.statistics
        values = {
            "cosine": stats.cosine,
            "alignment": stats.alignment,
            "estimate_variance": stats.variance,
            "relative_variance": stats.relative_variance,
            "projected_gradient_snr": stats.snr,
            "projected_gradient_rms": stats.projected_gradient_rms,
            "seconds": measurement.seconds,
        }
        self._log_metrics(trainer, {f"diagnostics/{k}": v for k, v in values.items() if v is not None}, measurement.step)
        if measurement.gradient_skipped is not None and not self._skip_reported:
            self._skip_reported = True
            rank_zero_info(
                f"ZODiagnostics: no true gradient at step {measurement.step}: {measurement.gradient_skipped}. Cosine, "
                "alignment and SNR are not logged; variance and the per-block figures are."
            )

    @staticmethod
    def _log_metrics(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        finite = {name: float(value) for name, value in metrics.items() if value == value and abs(value) != float("inf")}
        for logger in trainer.loggers:
            logger.log_metrics(finite, step=step)

    def _log_image(self, trainer: pl.Trainer, step: int) -> None:
        image = self._activity.image() if self._activity is not None else None
        if image is None:
            return
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("diagnostics/block_activity", image.numpy(), step, dataformats="HWC")

    @staticmethod
    def _log_final_metrics(trainer: pl.Trainer) -> None:
        # Plain scalars, not a `log_hyperparams` call: a second hparams header would be hidden by the run's first.
        final = {
            f"hp/{name}": float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith(("val", "test")) and getattr(value, "numel", lambda: 1)() == 1
        }
        if not final:
            return
        for logger in trainer.loggers:
            logger.log_metrics(final, step=trainer.global_step)
