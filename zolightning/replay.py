"""``python -m zolightning.replay LOG``: rebuild a logged run's weights from its base model and its trajectory.

    python -m zolightning.replay runs/demo/version_0/trajectory.zot --output tuned.pt
    python -m zolightning.replay trajectory.zot --upto 500 --output step500.pt        # the model at step 500
    python -m zolightning.replay trajectory.zot --config configs/demo.yaml           # the module from the run's YAML

The module is rebuilt from the log's header (its class, its hyperparameters, the global seed the run set before
building it), or from a LightningCLI YAML with ``--config``; replay checks that it holds the run's base weights, applies
the log (:func:`zolightning.trajectory.replay`), checks the weights against every fingerprint the run logged on the
way, and saves the state dict. A log that is truncated, corrupted, written by a newer format, or meant for other base
weights exits with status 2 and one line naming the problem (and the step).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import seed_everything
from torch import nn

from zolightning.trajectory.format import Trajectory, TrajectoryError, read_trajectory
from zolightning.trajectory.replay import replay
from zolightning.trajectory.run_spec import header_text, import_class


def build_module(header: Mapping[str, Any], config: str | Path | None = None) -> nn.Module:
    """The run's module at its base weights: from a LightningCLI YAML (``config``), else from the header."""
    if config is not None:
        from zolightning.cli import ZOLightningCLI  # the CLI layer, only when a YAML asks for it

        cli = ZOLightningCLI(args=["--config", str(config), "--trainer.logger", "false"], run=False,
                             save_config_callback=None)
        return cli.model
    model = header["model"]
    if model["hparams"] is None:
        raise TrajectoryError(f"{model['class']}'s hyperparameters are not plain data, so the log cannot rebuild it: "
                              "pass the run's YAML with --config.")
    if model["global_seed"] is not None:
        seed_everything(int(model["global_seed"]), verbose=False)  # new layers initialize as in the run
    return import_class(model["class"])(**model["hparams"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zolightning.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path, help="the trajectory (.zot) written by TrajectoryLog")
    parser.add_argument("--upto", type=int, default=None, help="stop after this many steps (default: all)")
    parser.add_argument("--output", type=Path, default=None, help="save the replayed state_dict here (torch.save)")
    parser.add_argument("--config", type=Path, default=None, help="build the module from this LightningCLI YAML")
    parser.add_argument("--show", action="store_true", help="print the log's header and step count, replay nothing")
    args = parser.parse_args(argv)
    try:
        trajectory: Trajectory = read_trajectory(args.log)
        if args.show:
            print(header_text(trajectory.header))
            print(f"{len(trajectory.steps)} steps, weights fingerprints at {[w.steps for w in trajectory.weights]}")
            return 0
        module = build_module(trajectory.header, args.config)
        result = replay(module, trajectory, upto=args.upto)
    except (TrajectoryError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    checked = (f"the weights match the run's fingerprints at steps {result.verified}" if result.verified
               else "the log holds no fingerprint of the weights up to here to check against")
    print(f"replayed {result.steps} steps in {result.seconds:.3f} s ({result.steps_per_second:.1f} steps/s); {checked}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        torch.save(module.state_dict(), args.output)
        print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
