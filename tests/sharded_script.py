"""Train under Lightning's ``ModelParallelStrategy`` (FSDP2 ``fully_shard``) on two CPU processes (gloo) and write each
rank's whole weights under ``OUTPUT/<case>/``.

Usage: ``python tests/sharded_script.py OUTPUT``. Lightning runs this script again for rank 1, so it cannot run inside
pytest; ``tests/test_module_sharded.py`` runs it as a subprocess and compares the weights with those of
``tests/ddp_script.py``'s DDP runs of the same module and data. All cases run in one launch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STEPS = 10
# Each case: (structure, steps of a first fit that saves a sharded checkpoint, or None for one fit of STEPS).
CASES: dict[str, tuple[str, int | None]] = {
    "sharded-dense": ("dense", None),
    "sharded-bcd": ("bcd", None),
    # Saved after 6 steps, one epoch of Interleaved(8): its loader is not stateful, so a resume restarts the epoch.
    "sharded-dense-resumed": ("dense", 6),
    "sharded-bcd-resumed": ("bcd", 6),
    # With a trajectory log (OUTPUT/sharded-bcd-logged/run.zot), which the test replays on one unsharded process.
    "sharded-bcd-logged": ("bcd", None),
    # Rank 1's loss is NaN at step NAN_STEP of 6, as in tests/ddp_script.py's "nan-on-rank1".
    "sharded-nan-on-rank1": ("dense", None),
    # With ZODiagnostics every DIAGNOSE_EVERY steps; each rank writes its measurements and per-block norms.
    "sharded-bcd-diagnosed": ("bcd", None),
    # The lr/ε finder, searching before the first step (then the fit stops); each rank writes its result.
    "sharded-dense-found": ("dense", None),
}
DIAGNOSE_EVERY = 4
FINDER = {"trials": 2, "stop_after": True, "eps_range": (1e-4, 1e-1)}


def diagnosis_record(measurement: Any) -> dict[str, Any]:
    """A ``StepDiagnosis`` as plain numbers (its statistics' fields, the step, the forwards, why no gradient)."""
    from dataclasses import asdict

    return {"step": measurement.step, "forwards": measurement.forwards, "skipped": measurement.gradient_skipped,
            **{k: v for k, v in asdict(measurement.statistics).items()}}


def finder_record(result: Any) -> dict[str, Any]:
    """A ``FinderResult`` as plain numbers (no explanation text)."""
    from dataclasses import asdict

    return {k: v for k, v in asdict(result).items() if k != "explanation"}


def main(output: Path) -> None:
    import torch
    from lightning.pytorch import Callback, Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import ModelParallelStrategy

    from tests.conftest import trainer_kwargs
    from zolightning.callbacks import TrajectoryLog, ZODiagnostics, ZOLearningRateFinder
    from tests.ddp_helpers import COLLECTIVE_TIMEOUT, MAX_STEPS, STRUCTURES, Interleaved, ShardedRegressor
    from tests.ddp_script import NAN_STEP

    class WholeWeights(Callback):
        """Every rank gathers the whole weights at the end (a collective) and writes them as ``rank<r>.pt``."""

        def __init__(self, folder: Path) -> None:
            self.folder = folder

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            whole = [p.full_tensor().detach().flatten() for p in pl_module.parameters()]
            sharded = [type(p).__name__ == "DTensor" for p in pl_module.parameters()]
            diagnostics = [c for c in trainer.callbacks if isinstance(c, ZODiagnostics)]
            measured = [diagnosis_record(m) for m in diagnostics[0].measurements] if diagnostics else []
            # Per-block distances from the initial weights: a collective (sums of squares over every rank's shards).
            distances = diagnostics[0]._motion.distances() if diagnostics else None
            finders = [c for c in trainer.callbacks if isinstance(c, ZOLearningRateFinder)]
            found = finder_record(finders[0].result) if finders else None
            torch.save({"weights": torch.cat(whole), "global_step": trainer.global_step, "all_sharded": all(sharded),
                        "diagnostics": measured, "distances": distances, "finder": found},
                       self.folder / f"rank{trainer.global_rank}.pt")

    def fit(folder: Path, structure: str, steps: int, ckpt_path: Path | None = None, save_every: int = 0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, timeout=COLLECTIVE_TIMEOUT)
        callbacks = [*STRUCTURES[structure](), WholeWeights(folder)]
        if folder.name.endswith("-logged"):
            callbacks.append(TrajectoryLog(folder / "run.zot"))
        if folder.name.endswith("-found"):
            callbacks.insert(0, ZOLearningRateFinder(**FINDER))
        if folder.name.endswith("-diagnosed"):
            callbacks.insert(0, ZODiagnostics(every_n_steps=DIAGNOSE_EVERY, extra_directions=2, image_steps=8))
        extra = {}
        if save_every:  # a sharded (distributed) checkpoint every `save_every` steps, a folder per checkpoint
            callbacks.append(ModelCheckpoint(dirpath=folder, every_n_train_steps=save_every, save_top_k=-1))
            extra["enable_checkpointing"] = True
        nan_at = (1, NAN_STEP) if folder.name == "sharded-nan-on-rank1" else None
        steps = MAX_STEPS if nan_at else steps
        trainer = Trainer(max_steps=steps, strategy=strategy, use_distributed_sampler=False, callbacks=callbacks,
                          **trainer_kwargs(devices=2, **extra))
        trainer.fit(ShardedRegressor(nan_at=nan_at), datamodule=Interleaved(8), ckpt_path=ckpt_path)

    for name, (structure, first) in CASES.items():
        if first is None:
            fit(output / name, structure, STEPS)
        else:
            fit(output / name / "first", structure, first, save_every=first)
            fit(output / name, structure, STEPS, ckpt_path=output / name / "first" / f"epoch=0-step={first}.ckpt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
