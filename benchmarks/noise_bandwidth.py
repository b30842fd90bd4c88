"""One perturbation pass over a large fp32 tensor, against ``copy_`` of the same tensor in the same run (issue 24).

    python -m benchmarks.noise_bandwidth [--numel 125000000] [--repeats 5] [--threads 1,2]

For each thread count (torch's and the noise workers', which run the fused kernels' chunks too) and each distribution, the variants are timed
interleaved, repeat by repeat:

* ``copy_``: ``dst.copy_(src)``, the memory-bound floor (one read and one write of the tensor's size);
* ``fused add``: :func:`~zolightning.functional.counter_noise.add_counter_noise_`, θ ← θ + αz with z generated in
  registers (numba kernel on CPU);
* ``fused update``: :func:`~zolightning.functional.counter_noise.counter_sgd_update_`, the restore fused with the
  ZO-SGD update and weight decay, same pass;
* ``torch path``: today's move, ``sample_noise`` (``torch.Generator`` chunks on the noise workers into a new buffer)
  then ``θ.add_(z, alpha=α)``.

Prints a table of medians (wall time, and this process's CPU time, which preemption by other processes on a shared
machine does not inflate) and, last, ``RATIO perturb/copy <x>``: the Gaussian fused add over ``copy_`` at 1 thread,
by wall time.
Writes ``results/noise_bandwidth.json`` (machine, load, every sample and the share of the machine other processes
used meanwhile).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

from benchmarks.common import RESULTS, Contention, machine, source_info
from zolightning.functional.counter_noise import add_counter_noise_, counter_sgd_update_, numba_kernels
from zolightning.functional.noise import sample_noise, stable_key, step_seed
from zolightning.engine.noise_workers import drawing_noise, set_noise_workers

VARIANTS = ("copy_", "fused add", "fused update", "torch path")


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    set_noise_workers(threads)  # the fused kernels' chunks and torch noise's alike run on the noise workers


def on_noise_workers(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` inside ``drawing_noise()``, as the engine runs every move and update."""

    def run() -> object:
        with drawing_noise():
            return fn()

    return run


def measure(fn: Callable[[], object]) -> tuple[float, float, float | None]:
    """(wall seconds, this process's CPU seconds over all its threads, the share of the machine others used)."""
    with Contention() as contention:
        cpu, start = time.process_time(), time.perf_counter()
        fn()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return seconds, cpu, contention.others


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numel", type=int, default=125_000_000, help="elements of the fp32 tensor (default 125M)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--distributions", default="gaussian,rademacher")
    parser.add_argument("--skip-torch-path", action="store_true", help="leave out today's (slow) torch path")
    parser.add_argument("--no-report", action="store_true", help="do not write results/noise_bandwidth.json")
    args = parser.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]
    distributions = args.distributions.split(",")
    variants = [v for v in VARIANTS if not (args.skip_torch_path and v == "torch path")]

    if numba_kernels() is None:
        print("numba is not installed: the fused passes run on the torch reference", file=sys.stderr)
    load_before = [round(x, 2) for x in os.getloadavg()]
    n = args.numel
    src = torch.ones(n)
    dst = torch.zeros(n)  # written once before timing: no first-touch page faults inside the timer
    theta = torch.ones(n)
    seed, key, alpha = step_seed(0, 1), stable_key("weight"), 1e-3

    samples: dict[str, dict[str, list[float]]] = {}
    cpu_samples: dict[str, dict[str, list[float]]] = {}
    others: dict[str, dict[str, list[float | None]]] = {}
    for threads in threads_list:
        set_threads(threads)
        for distribution in distributions:
            name = f"{threads}t/{distribution}"
            run: dict[str, Callable[[], object]] = {
                "copy_": lambda: dst.copy_(src),
                "fused add": lambda d=distribution: add_counter_noise_(theta, alpha, seed, key, distribution=d),
                "fused update": lambda d=distribution: counter_sgd_update_(
                    theta, seed, key, 0.3, lr=alpha, weight_decay=0.01, restore=-alpha, distribution=d
                ),
                "torch path": lambda d=distribution: theta.add_(sample_noise(theta.shape, seed, distribution=d),
                                                                  alpha=alpha),
            }
            for variant in variants:  # warm-up: compile the kernels, start the worker pools
                on_noise_workers(run[variant])()
            samples[name] = {v: [] for v in variants}
            cpu_samples[name] = {v: [] for v in variants}
            others[name] = {v: [] for v in variants}
            for _ in range(args.repeats):
                for variant in variants:
                    seconds, cpu, share = measure(on_noise_workers(run[variant]))
                    samples[name][variant].append(seconds)
                    cpu_samples[name][variant].append(cpu)
                    others[name][variant].append(share)

    gigabytes = 2 * n * 4 / 1e9  # one read and one write of the tensor
    rows = []
    print(f"numel {n:,} fp32 ({n * 4 / 1e6:.0f} MB), {args.repeats} repeats, medians; load before {load_before}")
    print(f"{'threads':>7} {'distribution':>12} {'variant':>13} {'median s':>9} {'GB/s':>6} {'× copy_':>8} "
          f"{'cpu s':>7} {'cpu × copy_':>11} {'others':>6}")
    for name, by_variant in samples.items():
        threads, distribution = name.split("/")
        copy = statistics.median(by_variant["copy_"])
        copy_cpu = statistics.median(cpu_samples[name]["copy_"])
        for variant, values in by_variant.items():
            median = statistics.median(values)
            cpu = statistics.median(cpu_samples[name][variant])
            shares = [s for s in others[name][variant] if s is not None]
            share = statistics.median(shares) if shares else None
            rows.append({"threads": int(threads[:-1]), "distribution": distribution, "variant": variant,
                         "median_s": median, "ratio_to_copy": median / copy, "samples_s": values,
                         "median_cpu_s": cpu, "cpu_ratio_to_copy": cpu / copy_cpu,
                         "cpu_samples_s": cpu_samples[name][variant], "others_cpu_share": others[name][variant]})
            share_text = f"{share:6.2f}" if share is not None else "     -"
            print(f"{threads[:-1]:>7} {distribution:>12} {variant:>13} {median:9.4f} {gigabytes / median:6.1f} "
                  f"{median / copy:8.2f} {cpu:7.4f} {cpu / copy_cpu:11.2f} {share_text}")
    report = {
        "command": " ".join(["python -m benchmarks.noise_bandwidth", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "source": source_info(),
        "numel": n,
        "repeats": args.repeats,
        "rows": rows,
    }
    if not args.no_report:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "noise_bandwidth.json").write_text(json.dumps(report, indent=1) + "\n")
    headline = [r for r in rows if r["threads"] == min(threads_list) and r["variant"] == "fused add"
                and r["distribution"] == distributions[0]]
    if headline:
        print(f"RATIO perturb/copy {headline[0]['ratio_to_copy']:.2f}")
    return report


if __name__ == "__main__":
    main()
