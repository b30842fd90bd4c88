"""Trajectory logs against checkpoints: bytes per step, log size per 1000 steps, replay speed against training.

    OMP_NUM_THREADS=1 python -m benchmarks.trajectory_size --config configs/demo.yaml --steps 200
    OMP_NUM_THREADS=1 python -m benchmarks.trajectory_size --config configs/llm_mezo.yaml --steps 10

Trains the recipe for ``--steps`` updates with a :class:`~zolightning.callbacks.TrajectoryLog` (the recipe's own
evaluation callbacks, DevSelection, HeldOutEvaluation and PeakMemory, are left out: they measure accuracy, not the
log), saves a Lightning checkpoint, rebuilds the base module from the log's header (as ``python -m
zolightning.replay`` does), replays and checks bitwise equality. Writes ``benchmarks/results/trajectory/<recipe>.json``.
Training speed counts updates after the first (which warms caches) to the last; replay speed counts every step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback

from benchmarks.common import machine, source_info
from zolightning.callbacks import TrajectoryLog
from zolightning.cli import ZOLightningCLI, quiet_upstream_noise
from zolightning.replay import build_module
from zolightning.trajectory import read_trajectory, replay
from zolightning.trajectory.format import encode_preamble

RESULTS = Path(__file__).resolve().parent / "results" / "trajectory"
SKIPPED = ("DevSelection", "HeldOutEvaluation", "PeakMemory")


class StepClock(Callback):
    """Wall time at the end of each update."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ends.append(time.perf_counter())


def measure(config: Path, steps: int, folder: Path) -> dict[str, Any]:
    log = folder / "trajectory.zot"
    cli = ZOLightningCLI(
        args=["--config", str(config), "--trainer.max_steps", str(steps), "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.val_check_interval", "null",
              "--trainer.limit_val_batches", "0"],
        run=False, save_config_callback=None,
    )
    trainer, module = cli.trainer, cli.model
    clock = StepClock()
    trainer.callbacks[:] = [c for c in trainer.callbacks if type(c).__name__ not in SKIPPED]
    trainer.callbacks += [TrajectoryLog(log, fingerprint_checkpoints=True), clock]
    trainer.fit(module, datamodule=cli.datamodule)
    checkpoint = folder / "run.ckpt"
    trainer.save_checkpoint(checkpoint)
    trained = {name: value.clone() for name, value in module.state_dict().items()}
    trainable = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    every = sum(p.numel() * p.element_size() for p in module.parameters())

    trajectory = read_trajectory(log)
    header_bytes = len(encode_preamble(trajectory.header))
    weights_bytes = 49 * len(trajectory.weights)  # frame (8) + kind (1) + steps (8) + SHA-256 (32)
    record_bytes = (log.stat().st_size - header_bytes - weights_bytes) / len(trajectory.steps)
    base = build_module(trajectory.header)
    result = replay(base, trajectory)
    bitwise = all(torch.equal(value, trained[name]) for name, value in base.state_dict().items())
    train_seconds = clock.ends[-1] - clock.ends[0]
    per_1000 = header_bytes + 1000 * record_bytes
    return {
        "config": str(config),
        "steps": len(trajectory.steps),
        "log_bytes": log.stat().st_size,
        "header_bytes": header_bytes,
        "bytes_per_step_record": record_bytes,
        "log_bytes_per_1000_steps": per_1000,
        "checkpoint_bytes": checkpoint.stat().st_size,
        "trainable_weight_bytes": trainable,
        "all_weight_bytes": every,
        "checkpoint_over_log_per_1000_steps": checkpoint.stat().st_size / per_1000,
        "trainable_weights_over_log_per_1000_steps": trainable / per_1000,
        "train_steps_per_second": (len(clock.ends) - 1) / train_seconds,
        "replay_steps_per_second": result.steps_per_second,
        "replay_bitwise_equal": bitwise,
        "replay_verified_fingerprints_at": result.verified,
        "machine": machine(),
        "source": source_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--name", default=None, help="report name (default: the config's stem)")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI below gets its arguments as `args`, not from the command line
    quiet_upstream_noise()
    with tempfile.TemporaryDirectory() as folder:
        report = measure(args.config, args.steps, Path(folder))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name or args.config.stem}.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("machine", "source")}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
