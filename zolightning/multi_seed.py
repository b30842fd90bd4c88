"""Run one config under several seeds and report each figure as mean ± standard deviation (MeZO reports 5-seed
means).

    python -m zolightning.multi_seed --seeds 0 1 2 -- fit --config configs/llm_mezo_bcd.yaml
    python -m zolightning.multi_seed --seeds 0 1 2 --output runs/bcd.json -- fit --config configs/llm_mezo_bcd.yaml

Each seed runs as its own process (``zolightning`` CLI arguments after ``--``, plus ``--seed_everything SEED``), one
after the other, so seeds never share state. The configs tie every seed to ``seed_everything`` (``zo.seed``, the
data split and order), so one number changes the whole run. Figures come from the run's callbacks through
:mod:`zolightning.run_results`: :class:`~zolightning.callbacks.DevSelection` (the selected checkpoint's test scores,
forward passes, training time) and :class:`~zolightning.callbacks.PeakMemory`; the wall time of each process
(imports and model loading included) is measured here. The standard deviation is the sample one (n − 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zolightning.run_results import RESULTS_FILE_VARIABLE, read_results

__all__ = ["main", "mean_std", "run_seeds", "summarize"]

FIGURES = (
    ("test_accuracy", "test accuracy", 100.0, "%"),
    ("test_macro_f1", "test macro-F1", 100.0, "%"),
    ("test_balanced_accuracy", "test balanced accuracy", 100.0, "%"),
    ("dev_accuracy", "dev accuracy (selected)", 100.0, "%"),
    ("selected_step", "selected step", 1.0, ""),
    ("train_forwards", "training forward passes", 1.0, ""),
    ("train_seconds", "training time (s)", 1.0, ""),
    ("wall_seconds", "wall time per seed (s)", 1.0, ""),
    ("peak_mib", "peak memory (MiB)", 1.0, ""),
)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def run_seeds(cli_args: Sequence[str], seeds: Sequence[int], workdir: Path, root: Path) -> list[dict[str, Any]]:
    """Run the CLI once per seed; the merged figures of each seed, in order. A failed seed stops everything.

    Each seed's ``trainer.default_root_dir`` is ``root/seed_<seed>`` (where a run without a logger keeps its
    ``config.yaml``; a configured logger keeps its own ``save_dir``)."""
    rows = []
    for seed in seeds:
        results = workdir / f"seed_{seed}.jsonl"
        results.unlink(missing_ok=True)
        command = [sys.executable, "-m", "zolightning.cli", *cli_args, "--seed_everything", str(seed),
                   "--trainer.default_root_dir", str(root / f"seed_{seed}")]
        print(f"[seed {seed}] {' '.join(command[2:])}", flush=True)
        started = time.perf_counter()
        completed = subprocess.run(command, env={**os.environ, RESULTS_FILE_VARIABLE: str(results)}, check=False)
        wall = time.perf_counter() - started
        if completed.returncode != 0:
            raise SystemExit(f"Seed {seed} failed with exit code {completed.returncode}; see its output above.")
        row: dict[str, Any] = {"seed": seed, "wall_seconds": round(wall, 1)}
        for source, record in read_results(results).items():
            row.update({k: v for k, v in record.items() if k != "source"})
        if "test_accuracy" not in row:
            raise SystemExit(
                f"Seed {seed} reported no test score: add `zolightning.callbacks.DevSelection` to the config's "
                "`trainer.callbacks`."
            )
        rows.append(row)
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{figure: {"mean": m, "std": s}}`` over the seeds, for every figure all seeds have."""
    summary = {}
    for key, *_ in FIGURES:
        values = [float(row[key]) for row in rows if isinstance(row.get(key), (int, float))]
        if len(values) == len(rows) and values:
            mean, std = mean_std(values)
            summary[key] = {"mean": mean, "std": std}
    return summary


def format_summary(summary: dict[str, dict[str, float]], seeds: Sequence[int]) -> str:
    """The report: one line per figure, ``mean ± std``."""
    lines = [f"Over {len(seeds)} seeds ({', '.join(map(str, seeds))}), mean ± std:"]
    for key, label, scale, unit in FIGURES:
        if key in summary:
            mean, std = summary[key]["mean"] * scale, summary[key]["std"] * scale
            digits = 2 if unit == "%" else 0
            lines.append(f"  {label:<28} {mean:,.{digits}f} ± {std:,.{digits}f}{unit}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m zolightning.multi_seed",
        description="Run a zolightning CLI command under several seeds; report mean ± std.",
        epilog="Example: python -m zolightning.multi_seed --seeds 0 1 2 -- fit --config configs/llm_mezo_bcd.yaml",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (default 0 1 2 3 4)")
    parser.add_argument("--output", type=Path, default=None, help="write the per-seed rows and summary as JSON")
    parser.add_argument("--root", type=Path, default=Path("runs") / "multi_seed",
                        help="each seed's trainer.default_root_dir is ROOT/seed_<seed> (default runs/multi_seed)")
    parser.add_argument("cli", nargs=argparse.REMAINDER, help="the CLI arguments, after --")
    options = parser.parse_args(argv)
    cli_args = options.cli[1:] if options.cli[:1] == ["--"] else options.cli
    if not cli_args or cli_args[0] != "fit":
        parser.error("give the CLI command after `--`, starting with `fit`, e.g. `-- fit --config configs/x.yaml`.")
    if len(set(options.seeds)) != len(options.seeds):
        parser.error(f"--seeds has duplicates: {options.seeds}.")
    with tempfile.TemporaryDirectory(prefix="zolightning-seeds-") as folder:
        rows = run_seeds(cli_args, options.seeds, Path(folder), options.root)
    summary = summarize(rows)
    report = {"command": cli_args, "seeds": options.seeds, "rows": rows, "summary": summary}
    print(format_summary(summary, options.seeds), flush=True)
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"Written to {options.output}", flush=True)
    return report


if __name__ == "__main__":
    main()
