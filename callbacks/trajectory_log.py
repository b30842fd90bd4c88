"""``TrajectoryLog``: records a ZO run as a trajectory (``.zot``) that replays to the trained weights bitwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from zolightning.engine.shards import is_sharded
from zolightning.module import ZOLightningModule
from zolightning.trainer_checks import FSDP2_STRATEGY, sharded_strategy_name
from zolightning.trajectory.format import StepRecord, TrajectoryError, WeightsRecord, weights_fingerprint
from zolightning.trajectory.replay import last_update
from zolightning.trajectory.run_spec import check_replayable, plan_signature, rule_spec, run_header
from zolightning.trajectory.writer import TrajectoryWriter

DEFAULT_NAME = "trajectory.zot"


class TrajectoryLog(Callback):
    """Append one record per update to a trajectory file: the step's seeds, the numbers its estimate was combined
    from, the lr and ε of each group and a check of its plan (about 80 bytes a step for one direction and one group;
    ``docs/trajectory-format.md``). With the header (the base weights' fingerprint, the ZO config, the optimizer, the
    structure rules) this is enough to rebuild the trained weights bitwise: ``python -m zolightning.replay`` or
    :func:`zolightning.trajectory.replay`. Each record is flushed as it is written, so a crash leaves every earlier
    record intact; the file is synced to disk at each checkpoint and at the end of the fit.

    Args:
        path: the file (default: ``trajectory.zot`` next to the checkpoints: the ModelCheckpoint's folder, else
            the logger's ``log_dir``, else ``default_root_dir``). On a resumed fit, a ``path`` other than the
            checkpoint's log branches the run: the log up to the checkpoint is copied there and continued.
        sync_every: also ``fsync`` every this many records (default 0: only at checkpoints and at the end).
        fingerprint_checkpoints: write the weights' SHA-256 fingerprint at each checkpoint and at the end (default
            ``True``), so that a replay proves it reproduced them; costs one pass over the weights each time.

    Refused at set-up, naming why: sharded strategies, ``zo.gradient: backprop``, plain ``torch.optim``
    optimizers, and structure rules that ``zolightning.structures.registry`` does not name. Under DDP only global rank 0 writes (every rank holds the same
    reduced numbers).

    State: the log's path and its count of step records, so that ``trainer.fit(ckpt_path=...)`` cuts the records
    after the checkpoint (and a torn tail) and appends to the same log.
    """

    def __init__(self, path: str | Path | None = None, sync_every: int = 0, fingerprint_checkpoints: bool = True) -> None:
        if path is not None and not isinstance(path, (str, Path)):
            raise TypeError(f"`path` must be a file path or None (next to the checkpoints), got {type(path).__name__}.")
        if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 0:
            raise ValueError(f"`sync_every` must be an integer >= 0 (0: sync at checkpoints only), got {sync_every!r}.")
        self.path = Path(path) if path is not None else None
        self.sync_every = sync_every
        self.fingerprint_checkpoints = fingerprint_checkpoints
        self.writer: TrajectoryWriter | None = None
        self._resume: dict[str, Any] | None = None
        self._state: dict[str, Any] = {}

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        name = type(self).__name__
        if not isinstance(pl_module, ZOLightningModule):
            raise TypeError(f"{name} logs zeroth-order steps; it needs a ZOLightningModule, got {type(pl_module).__name__}.")
        sharded = sharded_strategy_name(trainer.strategy)
        if sharded is not None and sharded != FSDP2_STRATEGY:
            raise ValueError(f"{name} needs each parameter whole on every rank, which {type(trainer.strategy).__name__} "
                             "does not keep. Use a single device, a DDP strategy, or ModelParallelStrategy (FSDP2).")
        if stage == "fit":
            check_replayable(pl_module.zo_config, None)  # the config's part; the optimizer exists from on_fit_start

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Refuse before the first step what a log could not replay (the structure callbacks are installed by now).
        assert isinstance(pl_module, ZOLightningModule)
        check_replayable(pl_module.zo_config, pl_module.zo_optimizer().optimizer)
        for part in ("selection", "directions"):
            rule_spec(getattr(pl_module.zo_structure, part))

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, ZOLightningModule)
        # Gathering sharded weights is a collective: every rank takes part, rank 0 writes.
        fresh = self._resume is None and (trainer.is_global_zero or _is_sharded(pl_module))
        fingerprint = weights_fingerprint(_whole_parameters(pl_module)) if fresh else None
        if not trainer.is_global_zero:
            return
        if self._resume is not None:
            records = int(self._resume["records"])
            if records != trainer.global_step:
                raise TrajectoryError(f"The checkpoint's log holds {records} steps but the run resumes at step "
                                      f"{trainer.global_step}; the log would not replay.")
            self.writer = TrajectoryWriter.resume(self._resume["path"], records, self.path)
            return
        if trainer.global_step != 0:
            raise TrajectoryError(f"{type(self).__name__} must start with the run (it starts at step {trainer.global_step} "
                                  "without a log in the checkpoint): a log replays from the base weights.")
        header = run_header(
            pl_module, pl_module.zo_config, pl_module.zo_optimizer().optimizer, pl_module.zo_engine,
            fingerprint=fingerprint, world_size=trainer.world_size,
            total_steps=pl_module.zo_engine.total_steps, default_dtype=_step_default_dtype(trainer),
        )
        self.writer = TrajectoryWriter.create(self.path or self._default_path(trainer), header)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        result = last_update(pl_module.zo_engine)
        if self.writer is None or result is None:
            return  # another rank, or a micro-batch that only accumulated
        if result.step != self.writer.step_records:
            raise TrajectoryError(f"Step {result.step} follows the log's {self.writer.step_records} records; steps "
                                  "must follow on from 0 for the log to replay.")
        block, refresh, crc = plan_signature(pl_module.zo_engine, result.step, result.active)
        self.writer.write(StepRecord(
            step=result.step, updated=result.updates, micro_batches=result.micro_batches, lr=result.group_lr,
            eps=result.group_eps, numbers=result.numbers, seeds=tuple(e.seed for e in result.estimates),
            active_block=block, refresh=refresh, active_crc=crc,
        ))
        if self.sync_every and self.writer.step_records % self.sync_every == 0:
            self.writer.sync()

    @override
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._mark(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark(trainer, pl_module)
        self.teardown(trainer, pl_module, "fit")

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "fit")  # every record written so far, synced

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.writer is not None:
            self._state = self.state_dict()
            self.writer.close()
            self.writer = None

    @override
    def state_dict(self) -> dict[str, Any]:
        if self.writer is None:
            return dict(self._state or self._resume or {})
        return {"path": str(self.writer.path.resolve()), "records": self.writer.step_records}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict) if state_dict else None

    def _mark(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Sync the log, after the weights' fingerprint (a replay checks it when it gets there). Every rank calls this
        (on checkpoints and at the end): with sharded weights, every rank takes part in gathering them."""
        if self.writer is None and not _is_sharded(pl_module):
            return
        # Mid-accumulation, the weights carry the micro-batches' moves, which no record holds yet.
        if self.fingerprint_checkpoints and not pl_module.zo_engine.accumulated:
            digest = weights_fingerprint(_whole_parameters(pl_module))
            if self.writer is not None:
                self.writer.write(WeightsRecord(trainer.global_step, digest))
        if self.writer is not None:
            self.writer.sync()

    @staticmethod
    def _default_path(trainer: pl.Trainer) -> Path:
        checkpoint = trainer.checkpoint_callback
        folder = getattr(checkpoint, "dirpath", None) or (trainer.log_dir if trainer.loggers else None)
        return Path(folder or trainer.default_root_dir) / DEFAULT_NAME


def _is_sharded(module: torch.nn.Module) -> bool:
    """Whether any parameter is sharded across ranks (a DTensor of FSDP2's ``fully_shard``)."""
    return any(is_sharded(p) for p in module.parameters())


def _whole_parameters(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``named_parameters()`` with each sharded parameter gathered whole (a collective), so that a log written by
    sharded ranks carries the fingerprints an unsharded replay computes."""
    return [(name, p.full_tensor() if is_sharded(p) else p) for name, p in module.named_parameters()]


def _step_default_dtype(trainer: pl.Trainer) -> torch.dtype:
    """torch's default dtype inside a training step (``bf16-true`` makes it bfloat16 there)."""
    with trainer.precision_plugin.train_step_context():
        return torch.get_default_dtype()
