"""Print the Markdown tables of benchmarks/README.md from the JSON reports in ``results/``.

    python -m benchmarks.tables                 # every report found
    python -m benchmarks.tables step_time memory_smollm2-135m
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from benchmarks.common import RESULTS, read_report


def header(report: dict[str, Any], name: str) -> str:
    m = report.get("machine", {})
    source = report.get("source", {})
    commit = (source.get("commit") or "?")[:7]
    load = m.get("loadavg_1_5_15")
    return (f"`results/{name}.json`: {report.get('model')}, {m.get('torch_threads')} torch thread(s) on {m.get('cores')} "
            f"cores, torch {m.get('torch')}, zolightning {commit}, load average before "
            f"{report.get('loadavg_before')}, after {load}  \n`{report.get('command', '(command not recorded)')}`")


def step_time(name: str, report: dict[str, Any]) -> str:
    rows = report["results"]
    lines = [header(report, name), "",
             "| variant | step (s) | forward (s) | perturb + update (s) | × floor | speed-up vs MeZO ref | others' CPU share |",
             "|---|---|---|---|---|---|---|"]
    for variant, r in rows.items():
        speedup = r.get("speedup_vs_reference")
        others = r.get("others_cpu_share") or []
        lines.append(f"| {variant} | {r['median_s']:.2f} | {r['forward_s']:.2f} | {r['perturb_update_s']:.2f} | "
                     f"{r['vs_floor']:.2f} | {'' if speedup is None else f'{speedup:.2f}×'} | "
                     f"{f'{statistics.median(others):.2f}' if others else 'n/a'} |")
    return "\n".join(lines)


def memory(name: str, report: dict[str, Any]) -> str:
    metric, base = report["metric"], report["baseline"]
    lines = [header(report, name), "",
             "| variant | after build (MiB) | peak (MiB) | peak − build (MiB) | × inference peak | ≤ 1.1× inference |",
             "|---|---|---|---|---|---|"]
    for r in report["results"]:
        if metric not in r:
            lines.append(f"| {r['variant']} | skipped: {r.get('skipped') or r.get('failed')} | | | | |")
            continue
        goal = {True: "yes", False: "**no**"}.get(r.get("meets_1.1x_goal"), "")
        lines.append(f"| {r['variant']} | {r[base]:.0f} | {r[metric]:.0f} | {r['increment_mb']:.0f} | "
                     f"{r.get('vs_inference_peak', float('nan')):.2f} | {goal} |")
    return "\n".join(lines)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def communication(name: str, report: dict[str, Any]) -> str:
    rows = report["results"]
    backprop = next((r["bytes_per_step_median"] for r in rows if r["variant"] == "backprop"), None)
    lines = [header(report, name), "",
             "| variant | bytes / step / rank | collectives in the step | backprop ÷ this | Lightning between steps | "
             "one-off setup |", "|---|---|---|---|---|---|"]
    for r in rows:
        ops = "; ".join(f"{op} ×{e['calls_per_step']} ({', '.join(e['payloads'][:2])})"
                        for op, e in r["step_ops_rank0_last_step"].items())
        b = r["bytes_per_step_median"]
        ratio = f"{backprop / b:,.0f}×" if backprop and b else ""
        between = r["between_steps_bytes_rank0"] / max(report["steps"] - 1, 1)
        lines.append(f"| {r['variant']} | {b:,.0f} B ({human(b)}) | {ops} | {ratio} | {between:,.0f} B | "
                     f"{human(r['setup_bytes_rank0'])} |")
    return "\n".join(lines)


def profile(name: str, report: dict[str, Any]) -> str:
    prof, mic = report["profile"], report["micro"]
    lines = [header(report, name)]
    if prof["scopes"]:
        lines += ["", "| phase (record_function scope) | CPU s / step | calls / step |", "|---|---|---|"]
        for label, r in prof["scopes"].items():
            lines.append(f"| {label} | {r['total_s']:.3f} | {r['calls_per_step']:.0f} |")
        lines += ["", "| top aten op (self CPU) | s / step | calls / step |", "|---|---|---|"]
        for r in prof["top_ops_self_cpu"][:10]:
            lines.append(f"| {r['op']} | {r['self_s_per_step']:.3f} | {r['calls_per_step']:.0f} |")
    lines += ["", f"One pass over {mic['numel'] / 1e6:.1f}M parameters ({mic['tensors']} tensors), median of "
              f"{mic['repeats']}:", "", "| pass | s | × library pass |", "|---|---|---|"]
    for label, r in mic["passes"].items():
        lines.append(f"| {label} | {r['median_s']:.3f} | {r['vs_library_pass']:.2f} |")
    lines.append(f"\nBitwise identical to the library's z: {mic['bitwise_identical_to_library']}")
    ab = report.get("ab_steps")
    if ab:
        lines += ["", f"Whole dense ZO-SGD steps, interleaved, median of {ab['repeats']} (same weights with and without "
                  f"fix 1: {ab['same_weights_after_one_step']}):", "",
                  "| step | s | perturb + update (s) | × floor |", "|---|---|---|---|"]
        for label, r in ab["results"].items():
            lines.append(f"| {label} | {r['median_s']:.2f} | {r['perturb_update_s']:.3f} | {r['vs_floor']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    names = sys.argv[1:] or sorted(p.stem for p in RESULTS.glob("*.json"))
    for name in names:
        report = read_report(name)
        if name.startswith("step_time"):
            text = step_time(name, report)
        elif name.startswith("memory"):
            text = memory(name, report)
        elif name.startswith("communication"):
            text = communication(name, report)
        elif name.startswith("profile_step"):
            text = profile(name, report)
        else:
            continue
        print(f"### {name}\n\n{text}\n")


if __name__ == "__main__":
    main()
