"""Does the ZO lr/ε finder land near the tuned values of our recipes? Runs ``ZOLearningRateFinder`` (no weight
changes, no training step) on a config's model and data, and prints one JSON line: configured vs proposed lr and ε.

    python -m benchmarks.finder_validation configs/demo.yaml [--trials 4] [--out benchmarks/results/finder/demo.json]
    python -m benchmarks.finder_validation --table benchmarks/results/finder     # the README's table from the reports

The configs' values were tuned by runs (README, "Measured runs of the demo"; ``results/llm_table/tuning_probes.jsonl``
for the LLM recipes). The issue's bar: the proposal within 3× of the configured lr.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from lightning.pytorch import Trainer

from zolightning.callbacks import StructureCallback, ZOLearningRateFinder
from zolightning.cli import ZOLightningCLI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?")
    parser.add_argument("--table", type=Path, help="print a Markdown table of the JSON reports in this folder")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--no-eps", action="store_true", help="keep ε (search the lr only)")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args()
    if options.table is not None:
        print(table(sorted(options.table.glob("*.json"))))
        return
    if options.config is None:
        parser.error("give a config (or --table FOLDER)")
    torch.set_num_threads(1)
    cli = ZOLightningCLI(args=["--config", options.config], run=False)
    finder = ZOLearningRateFinder(trials=options.trials, eps_range=None if options.no_eps else (1e-5, 1e-1), stop_after=True)
    # The config's structure (BlockRotation, SparsityMask, ...) shapes the plan the finder measures; its evaluation
    # callbacks would only cost time.
    structures = [c for c in cli.trainer.callbacks if isinstance(c, StructureCallback)]
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      callbacks=[*structures, finder])
    started = time.perf_counter()
    trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - started
    result = finder.result
    assert result is not None
    report = {
        "config": options.config,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "trials": options.trials,
        "structures": [type(c).__name__ for c in structures],
        "configured_lr": result.current_lr,
        "proposed_lr": result.lr,
        "lr_ratio": (result.lr / result.current_lr) if result.lr and result.current_lr else None,
        "lr_best_step": result.lr_best_step,
        "lr_stable": result.lr_stable,
        "trial_best_lrs": result.trial_best_lrs,
        "configured_eps": result.current_eps,
        "proposed_eps": result.eps,
        "eps_range": result.eps_range,
        "seconds": round(seconds, 1),
        "lr_curve": result.lr_curve,
        "eps_curve": result.eps_curve,
        "explanation": result.explanation,
    }
    print(json.dumps(report))
    if options.out is not None:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps(report, indent=1) + "\n")


def table(paths: list[Path]) -> str:
    """One row per report: configured and proposed lr and ε, their ratio, the stable ranges, the finder's time."""
    rows = [
        "| config | lr configured | lr proposed | ratio | one-step best · turns positive | single trials' best | "
        "ε configured | ε stable range | ε proposed | finder time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        r = json.loads(path.read_text())
        trials = r.get("trial_best_lrs") or []
        spread = f"{min(trials):.1e} … {max(trials):.1e}" if trials else "–"
        eps_range = "–" if not r["eps_range"] else f"{r['eps_range'][0]:.0e} … {r['eps_range'][1]:.1e}"
        ratio = f"{r['lr_ratio']:.2f}×" if r["lr_ratio"] else "–"
        proposed = f"{r['proposed_lr']:.2e}" if r["proposed_lr"] else "none"
        best = f"{r['lr_best_step']:.2e} · {r['lr_stable']:.2e}" if r["lr_best_step"] else "–"
        rows.append(
            f"| `{r['config']}` | {r['configured_lr']:g} | {proposed} | {ratio} | {best} | {spread} | "
            f"{r['configured_eps']:g} | {eps_range} | {format(r['proposed_eps'], 'g') if r['proposed_eps'] is not None else '–'} | "
            f"{r['seconds']:.0f} s |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
