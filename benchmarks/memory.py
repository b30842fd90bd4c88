"""Peak memory of a ZO step, per structure and per optimizer, against inference and first-order backprop + Adam.

Every variant runs in a fresh subprocess on the same model and batch, so that peaks do not leak between variants:

- ``inference``: two ``no_grad`` forwards per step (the floor a ZO step cannot go below);
- ``<structure>/<optimizer>``: ``optimizer.step(closure, seed=..., plan=structure.plan(...))``; the structures are
  those of step_time (dense, BCD layer, sparse, LOZO, SubZero), the optimizers ``ZOSGD`` (momentum 0 and 0.9) and
  the family ``ZOSGDSign``, ``ZOSGDCons``, ``ZOAdam``, ``HiZOO`` when ``zolightning.optim`` has them (a variant
  whose optimizer does not exist yet is reported as skipped: re-run the script once it does);
- ``backprop-adam``: forward, backward, ``torch.optim.Adam`` step.

On CPU the figure is the process's peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) after ``--steps``
steps, next to the RSS right after the model, batch and optimizer are built; the high-water mark is reset to the
current RSS just before the steps (``/proc/self/clear_refs``), so that model construction does not mask the steps.
On CUDA it is ``torch.cuda.max_memory_allocated`` against ``memory_allocated`` after the build. The model stays in
eval mode for every variant (as step_time; no dropout masks in backprop).

    python -m benchmarks.memory                                   # OPT-125m-shaped, fp32, batch 16 × 64, 3 steps
    python -m benchmarks.memory --model smollm2-135m
    python -m benchmarks.memory --variants inference,dense/ZOSGD  # a subset (names as in the report)
    python -m benchmarks.memory --cross                           # every structure × every optimizer
    python -m benchmarks.memory --merge --variants dense/ZOAdam   # re-measure some, keep the report's others
    python -m benchmarks.memory --plot-only

Writes ``results/memory.json`` (``memory_<model>.json`` for other models) and a PNG of the same name.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# The parent process imports nothing heavy: a child started with vfork+exec inherits the parent's peak RSS into its
# own ru_maxrss (Linux keeps the larger of the two), so the parent must stay far below any child's peak.

EPS, LR = 1e-3, 1e-7
STRUCTURE_NAMES = ("dense", "bcd-layer", "sparse-random-0.75", "lozo-r2", "subzero-r24")  # = common.STRUCTURES
# Also measurable by name (--variants): "bcd-layer-arithmetic/ZOSGD", BCD with the arithmetic restore.

# (label, class name in zolightning.optim, constructor keyword arguments). The family's classes are looked up with
# getattr at run time; add a row here for a new optimizer.
OPTIMIZERS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ZOSGD", "ZOSGD", {}),
    ("ZOSGD(momentum=0.9)", "ZOSGD", {"momentum": 0.9}),
    ("ZOSGDSign", "ZOSGDSign", {}),
    ("ZOSGDCons", "ZOSGDCons", {}),
    ("ZOAdam", "ZOAdam", {}),
    ("HiZOO", "HiZOO", {}),
)
OPTIMIZER_BY_LABEL = {label: (cls, kwargs) for label, cls, kwargs in OPTIMIZERS}
INFERENCE, BACKPROP = "inference", "backprop-adam"


def variant_names(cross: bool) -> list[str]:
    """Default: every structure with ZOSGD, and every optimizer on the dense structure (where optimizer state is
    largest); ``cross``: every structure with every optimizer."""
    names = [INFERENCE]
    if cross:
        names += [f"{s}/{label}" for s in STRUCTURE_NAMES for label, _, _ in OPTIMIZERS]
    else:
        names += [f"{s}/ZOSGD" for s in STRUCTURE_NAMES]
        names += [f"dense/{label}" for label, _, _ in OPTIMIZERS if label != "ZOSGD"]
    return names + [BACKPROP]


# ---------------------------------------------------------------------------------------------------- the child


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS to its current RSS (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def child(variant: str, model_name: str, batch: int, length: int, steps: int) -> dict[str, Any]:
    import torch

    import zolightning.optim
    from benchmarks.common import attach_structure, build_model, lm_loss, token_batch

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    step_fn: Any = None
    info: dict[str, Any] = {"variant": variant}
    if variant not in (INFERENCE, BACKPROP):
        structure_name, label = variant.split("/", 1)
        if label not in OPTIMIZER_BY_LABEL:
            raise SystemExit(f"unknown optimizer {label!r}; choose from {list(OPTIMIZER_BY_LABEL)}")
        class_name, kwargs = OPTIMIZER_BY_LABEL[label]
        optimizer_class = getattr(zolightning.optim, class_name, None)
        if optimizer_class is None:
            return {**info, "skipped": f"zolightning.optim has no {class_name} (yet)"}
        info.update(structure=structure_name, optimizer=class_name, optimizer_kwargs=kwargs)

    model = build_model(model_name).to(device)
    tokens = token_batch(batch, length, model.config.vocab_size).to(device)
    loss_fn = lm_loss(model, tokens)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    if variant == INFERENCE:

        def step_fn(k: int) -> None:
            with torch.no_grad():
                loss_fn()
                loss_fn()

    elif variant == BACKPROP:
        adam = torch.optim.Adam([p for _, p in named], lr=1e-5)

        def step_fn(k: int) -> None:
            loss_fn().backward()
            adam.step()
            adam.zero_grad(set_to_none=True)

    else:
        try:
            optimizer = optimizer_class(named, lr=LR, eps=EPS, **kwargs)
        except TypeError as error:  # a family member with another signature: report it rather than guess
            return {**info, "skipped": f"{class_name}(named_parameters, lr, eps, **{kwargs}) failed: {error}"}
        attach_structure(structure_name, model, optimizer)

        def step_fn(k: int) -> None:
            optimizer.step(loss_fn, step=k)

    if cuda:
        torch.cuda.synchronize()
        built = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    built_rss_kb = _proc_status_kb("VmRSS")
    build_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = _reset_peak_rss()
    started = time.perf_counter()
    for k in range(steps):
        step_fn(k)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    info.update(
        device=str(device),
        steps=steps,
        seconds=seconds,
        params=sum(p.numel() for _, p in named),
        model_rss_mb=built_rss_kb / 1024,  # RSS after model, batch and optimizer are built (torch itself included)
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # ru_maxrss: kB on Linux
        vm_hwm_mb=_proc_status_kb("VmHWM") / 1024,  # the mm's own high-water mark, reset just before the steps
        build_peak_rss_mb=build_peak_kb / 1024,
        peak_reset_before_steps=reset,
    )
    if cuda:
        info.update(model_cuda_mb=built / 2**20, peak_cuda_mb=torch.cuda.max_memory_allocated() / 2**20)
    return info


# ---------------------------------------------------------------------------------------------------- the parent


def run_child(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.memory", "--child", "--variant", variant, "--model", args.model,
               "--batch", str(args.batch), "--length", str(args.length), "--steps", str(args.steps),
               "--threads", str(args.threads)]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    results = [line[len("RESULT "):] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {"variant": variant, "failed": f"exit code {done.returncode}: " + " | ".join(tail)}
    return json.loads(results[-1])


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    measured = [r for r in rows if "peak_rss_mb" in r]
    key = "peak_cuda_mb" if any("peak_cuda_mb" in r for r in measured) else "peak_rss_mb"
    base = "model_cuda_mb" if key == "peak_cuda_mb" else "model_rss_mb"
    inference = next((r for r in measured if r["variant"] == INFERENCE), None)
    for row in measured:
        row["increment_mb"] = row[key] - row[base]
        if inference is not None:
            row["vs_inference_peak"] = row[key] / inference[key]
            row["increment_vs_inference_increment"] = row["increment_mb"] / max(inference["increment_mb"], 1e-9)
            if row["variant"] not in (INFERENCE, BACKPROP):
                row["meets_1.1x_goal"] = row["vs_inference_peak"] <= 1.1
    return {"metric": key, "baseline": base}


def table(rows: list[dict[str, Any]], metric: str, baseline: str) -> str:
    lines = ["| variant | after build (MB) | peak (MB) | peak − build (MB) | × inference peak | ≤ 1.1× |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        if metric in row:
            goal = {True: "yes", False: "no"}.get(row.get("meets_1.1x_goal"), "")
            lines.append(f"| {row['variant']} | {row[baseline]:.0f} | {row[metric]:.0f} | {row['increment_mb']:.0f} | "
                         f"{row.get('vs_inference_peak', float('nan')):.2f} | {goal} |")
        else:
            lines.append(f"| {row['variant']} | skipped: {row.get('skipped') or row.get('failed')} | | | | |")
    return "\n".join(lines)


def report_name(model: str) -> str:
    return "memory" if model == "opt-125m" else f"memory_{model}"


def plot(name: str) -> None:
    from benchmarks.common import pyplot, read_report, save_plot

    plt = pyplot()
    if plt is None:
        return
    report = read_report(name)
    metric, baseline = report["metric"], report["baseline"]
    rows = [r for r in report["results"] if metric in r]
    skipped = [r["variant"] for r in report["results"] if metric not in r]
    names = [r["variant"] for r in rows]
    peaks = [r[metric] / 1024 for r in rows]
    built = [r[baseline] / 1024 for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(names) + 2), 4.8))
    colors = ["#55a868" if r["variant"] == INFERENCE else "#c44e52" if r["variant"] == BACKPROP else "#4c72b0"
              for r in rows]
    ax.bar(names, peaks, color=colors)
    for color, label in (("#55a868", "peak: inference"), ("#4c72b0", "peak: ZO"), ("#c44e52", "peak: backprop + Adam")):
        ax.bar([names[0]], [0], color=color, label=label)  # legend entries only
    ax.scatter(names, built, marker="_", s=400, color="black", zorder=3, label="after model build")
    inference = next((r for r in rows if r["variant"] == INFERENCE), None)
    if inference is not None:
        level = inference[metric] / 1024
        ax.axhline(level, color="#55a868", linestyle="--", linewidth=1, label=f"inference peak {level:.2f} GiB")
        ax.axhline(1.1 * level, color="gray", linestyle=":", linewidth=1, label="goal: 1.1× inference")
        for x, r in enumerate(rows):
            ax.text(x, r[metric] / 1024, f"{r['vs_inference_peak']:.2f}×", ha="center", va="bottom", fontsize=7)
    unit = "CUDA max_memory_allocated" if metric == "peak_cuda_mb" else "peak RSS"
    ax.set_ylabel(f"{unit} (GiB)")
    ax.set_ylim(0, 1.2 * max(peaks))
    ax.set_title(f"{report['model']}, fp32, batch {report['batch']}×{report['length']}, {report['steps']} steps"
                 + (f"\nskipped (not implemented yet): {', '.join(skipped)}" if skipped else ""), fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    save_plot(plt, fig, ax, name, rotation=35, labelsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["opt-125m", "smollm2-135m"], default="opt-125m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in each child (default: torch's choice; 1 is faster on a busy machine)")
    parser.add_argument("--variants", default="all", help="comma-separated variant names, or 'all'")
    parser.add_argument("--cross", action="store_true", help="every structure with every optimizer")
    parser.add_argument("--out", default=None, help="report name (default: memory[_<model>])")
    parser.add_argument("--merge", action="store_true",
                        help="update the existing report: replace or add the variants run now, keep the others")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    name = args.out or report_name(args.model)
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print("RESULT " + json.dumps(child(args.variant, args.model, args.batch, args.length, args.steps)), flush=True)
        return
    if args.plot_only:
        plot(name)
        return

    names = variant_names(args.cross) if args.variants == "all" else args.variants.split(",")
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for variant in names:
        row = run_child(variant, args)
        rows.append(row)
        shown = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()
                 if k in ("variant", "model_rss_mb", "peak_rss_mb", "peak_cuda_mb", "skipped", "failed")}
        print(shown, flush=True)

    from benchmarks.common import RESULTS, MODELS, machine, read_report, source_info, write_report  # only now

    command = "python -m benchmarks.memory " + " ".join(sys.argv[1:])
    runs = [{"command": command, "variants": names, "loadavg_before": load_before, "source": source_info()}]
    if args.merge and (RESULTS / f"{name}.json").exists():
        old = read_report(name)
        if (old["batch"], old["length"], old["steps"]) != (args.batch, args.length, args.steps):
            raise SystemExit("--merge needs the same --batch, --length and --steps as the existing report")
        new = {r["variant"]: r for r in rows}
        rows = [new.pop(r["variant"], r) for r in old["results"]] + list(new.values())
        runs = old.get("runs", [{"command": old.get("command"), "source": old.get("source")}]) + runs
    columns = summarise(rows)
    payload = {"model": MODELS[args.model][1], "dtype": "fp32", "batch": args.batch, "length": args.length,
               "steps": args.steps, "machine": machine(), "loadavg_before": load_before, "source": source_info(),
               "command": command, "runs": runs, **columns,
               "skipped": [r["variant"] for r in rows if "skipped" in r or "failed" in r], "results": rows}
    path = write_report(name, payload)
    print(table(rows, columns["metric"], columns["baseline"]))
    print(f"written to {path}")
    plot(name)


if __name__ == "__main__":
    main()
