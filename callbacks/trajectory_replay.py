"""``TrajectoryReplay``: the first steps of a fit replayed from a trajectory, then training goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from zolightning.engine.measurement import Recorded
from zolightning.module import ZOLightningModule
from zolightning.trajectory.format import Trajectory, TrajectoryError, read_trajectory, weights_fingerprint
from zolightning.trajectory.replay import check_base, last_update, mismatch, resolve_upto
from zolightning.trajectory.run_spec import class_path


class TrajectoryReplay(Callback):
    """Replay the log's first ``upto`` steps inside this fit, then train on: the run branches at step ``upto``.

    The replayed steps run no forward pass: before each of their batches the callback hands the module the step's
    logged numbers (:attr:`~zolightning.ZOLightningModule.zo_replay`, a value), which the engine's ``measure`` takes
    instead of measuring; the data loader and the loops advance as in the run, and each replayed step is checked
    against its record. A fit with the run's config then continues exactly as the
    uninterrupted run would have (bitwise, on the same device and dtype); change what should differ after step
    ``upto`` (the data, ``max_steps``, a callback) to branch. With a :class:`TrajectoryLog` beside it, the new log
    repeats the replayed records and goes on; ``trainer.save_checkpoint`` after a fit of ``max_steps=upto`` gives a
    checkpoint of the run at that step.

    Args:
        path: the trajectory (``.zot``) of a run of this module, config and optimizer.
        upto: steps to replay (default: all the log's steps).

    Refused (:class:`~zolightning.trajectory.TrajectoryError`, naming why): a module without the log's base weights
    or dtypes, a fit that does not start at step 0, another optimizer class, another learning rate at a replayed step,
    or a step that does not replay as logged.
    """

    def __init__(self, path: str | Path, upto: int | None = None) -> None:
        if not isinstance(path, (str, Path)):
            raise TypeError(f"`path` must be the trajectory file, got {type(path).__name__}.")
        if upto is not None and (isinstance(upto, bool) or not isinstance(upto, int) or upto < 0):
            raise ValueError(f"`upto` must be an integer >= 0 or None (every step), got {upto!r}.")
        self.path = Path(path)
        self.upto = upto
        self._trajectory: Trajectory | None = None
        self._steps = 0
        self._digests: dict[int, bytes] = {}

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(pl_module, ZOLightningModule):
            raise TypeError(f"{type(self).__name__} needs a ZOLightningModule, got {type(pl_module).__name__}.")
        trajectory = read_trajectory(self.path)
        header = trajectory.header
        self._steps = resolve_upto(self.upto, len(trajectory.steps))
        if trainer.global_step != 0:
            raise TrajectoryError(f"A replay starts from the base weights at step 0; this fit starts at step "
                                  f"{trainer.global_step} (drop `ckpt_path`).")
        check_base(pl_module, header)
        optimizer = class_path(type(pl_module.zo_optimizer().optimizer))
        if optimizer != header["optimizer"]["class"]:
            raise TrajectoryError(f"The log was written with {header['optimizer']['class']}, this fit steps {optimizer}.")
        self._trajectory = trajectory
        self._digests = {record.steps: record.digest for record in trajectory.weights}

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        assert isinstance(pl_module, ZOLightningModule)
        step = trainer.global_step
        if self._trajectory is None or step >= self._steps:
            pl_module.zo_replay = None  # measured from here on
            return
        pl_module.zo_replay = Recorded(self._trajectory.steps[step].numbers, int(self._trajectory.header["world_size"]))
        lrs = tuple(float(group["lr"]) for group in pl_module.zo_optimizer().optimizer.param_groups)
        if lrs != self._trajectory.steps[step].lr:
            raise TrajectoryError(f"At step {step} this fit's learning rates are {lrs}, the log's "
                                  f"{self._trajectory.steps[step].lr}: replay needs the run's optimizer settings.")

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        result = last_update(pl_module.zo_engine)
        if self._trajectory is None or result is None or result.step >= self._steps:
            return
        problem = mismatch(pl_module.zo_engine, self._trajectory.steps[result.step], result)
        if problem is not None:
            raise TrajectoryError(f"Step {result.step} does not replay as logged: {problem}.")
        digest = self._digests.get(result.step + 1)
        if digest is not None and weights_fingerprint(pl_module.named_parameters()) != digest:
            raise TrajectoryError(f"After step {result.step} the replayed weights differ from the run's.")

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if isinstance(pl_module, ZOLightningModule):
            pl_module.zo_replay = None
        self._trajectory = None
