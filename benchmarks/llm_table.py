"""The README's LLM fine-tuning table, rendered from the multi-seed reports in ``benchmarks/results/llm_table/``.

    python -m benchmarks.llm_table                     # prints the markdown table
    python -m benchmarks.llm_table --check-bar         # also checks the issue's bar (exit 1 when missed)

Each report is what ``python -m zolightning.multi_seed --output ... -- fit --config configs/<recipe>.yaml`` wrote.
Figures are mean ± sample std over the seeds; forward passes and steps are per seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "llm_table"
ROWS = (
    ("llm_zero_shot", "zero-shot (no training)"),
    ("llm_mezo", "MeZO, full (ZO-SGD)"),
    ("llm_mezo_bcd", "MeZO-BCD, one layer per step"),
    ("llm_mezo_lora", "MeZO-LoRA (r 8)"),
    ("llm_mezo_prefix", "MeZO-prefix (5 tokens)"),
    ("llm_mezo_error_rate", "MeZO-BCD on the error rate (no gradient)"),
    ("llm_adam", "backprop + Adam, full"),
    ("llm_adam_lora", "backprop + Adam, LoRA (r 8)"),
)


def _cell(summary: dict[str, Any], key: str, scale: float = 100.0, digits: int = 1, seeds: int = 2) -> str:
    if key not in summary:
        return "n/a"
    mean, std = summary[key]["mean"] * scale, summary[key]["std"] * scale
    return f"{mean:.{digits}f}" if seeds < 2 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def load(name: str, folder: Path = RESULTS) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def table(folder: Path = RESULTS) -> str:
    lines = [
        "| recipe | test accuracy % | macro-F1 % | balanced acc. % | steps | training forwards | training time (s) | "
        "wall time per seed (s) | peak memory (MiB) | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, label in ROWS:
        report = load(name, folder)
        if report is None:
            lines.append(f"| {label} | not run | | | | | | | | `configs/{name}.yaml` |")
            continue
        s, n = report["summary"], len(report["seeds"])
        steps = report["rows"][0].get("steps", "?")
        seeds = " ".join(map(str, report["seeds"]))
        shown = label if n > 2 else f"{label}, **seed{'s' if n > 1 else ''} {seeds.replace(' ', ', ')} only**"
        lines.append(
            f"| {shown} | {_cell(s, 'test_accuracy', seeds=n)} | {_cell(s, 'test_macro_f1', seeds=n)} | "
            f"{_cell(s, 'test_balanced_accuracy', seeds=n)} | {steps} | {_cell(s, 'train_forwards', 1, 0, n)} | "
            f"{_cell(s, 'train_seconds', 1, 0, n)} | {_cell(s, 'wall_seconds', 1, 0, n)} | "
            f"{_cell(s, 'peak_mib', 1, 0, n)} | "
            f"`python -m zolightning.multi_seed --seeds {seeds} -- fit --config configs/{name}.yaml` |"
        )
    return "\n".join(lines)


def check_bar(folder: Path = RESULTS) -> list[str]:
    """The issue's bar: BCD ≥ zero-shot + 10 points, and BCD ≥ dense MeZO at the same forward passes."""
    zero, dense, bcd = (load(name, folder) for name in ("llm_zero_shot", "llm_mezo", "llm_mezo_bcd"))
    if zero is None or dense is None or bcd is None:
        return ["missing reports: the bar needs llm_zero_shot, llm_mezo and llm_mezo_bcd"]
    acc = {name: r["summary"]["test_accuracy"]["mean"] * 100 for name, r in (("zero", zero), ("dense", dense),
                                                                                ("bcd", bcd))}
    forwards = {name: r["summary"]["train_forwards"]["mean"] for name, r in (("dense", dense), ("bcd", bcd))}
    verdicts = [
        f"BCD - zero-shot = {acc['bcd'] - acc['zero']:+.1f} points (bar: >= +10): "
        + ("met" if acc["bcd"] - acc["zero"] >= 10 else "MISSED"),
        f"BCD - dense MeZO = {acc['bcd'] - acc['dense']:+.1f} points at {forwards['bcd']:.0f} vs {forwards['dense']:.0f} "
        "forwards (bar: >= 0 at equal forwards): "
        + ("met" if acc["bcd"] >= acc["dense"] and forwards["bcd"] <= forwards["dense"] else "MISSED"),
    ]
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=RESULTS)
    parser.add_argument("--check-bar", action="store_true")
    options = parser.parse_args()
    print(table(options.folder))
    if options.check_bar:
        verdicts = check_bar(options.folder)
        print("\n".join(verdicts))
        if any("MISSED" in v or "missing" in v for v in verdicts):
            raise SystemExit(1)


if __name__ == "__main__":
    main()
