"""Where does a dense ZO step's time go beyond the two forwards? torch.profiler over a few ZO-SGD steps, plus
micro-benchmarks of one noise pass and its parts.

1. Profile: ``--steps`` dense ZO-SGD steps (after one warm-up step) under ``torch.profiler``, with the library's
   functions wrapped *in this process only* in ``record_function`` scopes (``zo::forward``, ``zo::perturb``,
   ``zo::update``, ``zo::sample_z``, ``zo::generator``), so that the table splits the step into its phases and
   lists the top aten ops by self CPU time (``normal_``, ``add_``, ``empty``, ...). No library file is changed.
2. Micro-benchmarks over the model's parameters, interleaved, medians: one perturbation pass as the library does
   it, and its parts (generator creation, allocating z, drawing the Gaussians, the in-place add), and candidate
   fixes: drawing into a reused buffer, and drawing the next tensors' noise on other threads while the current one
   is added (each tensor has its own generator, so this gives bitwise the same z; checked here).
3. Whole steps, interleaved (``--ab-repeats``): the floor, the library's dense step, and the same step with fix 1
   patched in (this process only), with a check that both leave bitwise the same weights.

    python -m benchmarks.profile_step                      # OPT-125m-shaped, fp32, batch 16 × 64, 2 steps
    python -m benchmarks.profile_step --model smollm2-135m --batch 8 --steps 2
    python -m benchmarks.profile_step --threads 1 --out profile_step_threads1

Writes ``results/profile_step.json`` and ``results/profile_step.txt`` (``profile_step_<model>.*`` for other models).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import zolightning.functional.directions as directions_module
import zolightning.engine.probe as probe_module
import zolightning.functional.noise as noise_module
import zolightning.optim.sgd as sgd_module
from benchmarks.common import (
    MODELS,
    RESULTS,
    build_model,
    lm_loss,
    machine,
    source_info,
    token_batch,
    two_forwards,
    write_report,
)
from zolightning.functional.noise import fill_noise_, make_generator, step_seed, tensor_seed
from zolightning.structures.base import tensor_key
from zolightning.optim import ZOSGD

EPS, LR = 1e-3, 1e-7
SCOPES = ("zo::forward", "zo::perturb", "zo::update", "zo::sample_z", "zo::generator")


@contextlib.contextmanager
def scoped_library() -> Iterator[None]:
    """Wrap the library's step phases in record_function scopes (monkeypatching, this process only)."""

    def scoped(label: str, fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with record_function(label):
                return fn(*args, **kwargs)

        return wrapper

    patches = [
        (probe_module, "evaluate_loss", "zo::forward"),
        (probe_module, "move_", "zo::perturb"),
        (sgd_module, "zo_sgd_update_", "zo::update"),
        (directions_module, "fill_noise_", "zo::sample_z"),
        (noise_module, "make_generator", "zo::generator"),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, label in patches:
        setattr(module, name, scoped(label, getattr(module, name)))
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


def profile_steps(model: torch.nn.Module, tokens: torch.Tensor, steps: int) -> dict[str, Any]:
    loss_fn = lm_loss(model, tokens)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = ZOSGD(named, lr=LR, eps=EPS)

    def step(k: int) -> None:
        optimizer.step(loss_fn, step=k)

    step(0)  # warm-up
    with scoped_library(), profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for k in range(1, steps + 1):
            with record_function("zo::step"):
                step(k)
        wall = time.perf_counter() - started
    events = prof.key_averages()
    by_name = {e.key: e for e in events}
    scopes = {
        label: {"total_s": by_name[label].cpu_time_total / 1e6 / steps, "calls_per_step": by_name[label].count / steps}
        for label in ("zo::step", *SCOPES)
        if label in by_name
    }
    # Self time of the aten ops inside the step, largest first; the forward's ops are included (and listed), since
    # self time cannot be split by parent scope in key_averages.
    ops = sorted((e for e in events if not e.key.startswith("zo::")), key=lambda e: e.self_cpu_time_total, reverse=True)
    top = [
        {"op": e.key, "self_s_per_step": e.self_cpu_time_total / 1e6 / steps, "calls_per_step": e.count / steps}
        for e in ops[:25]
    ]
    table = events.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=48)
    return {"steps": steps, "wall_s_per_step_profiled": wall / steps, "scopes": scopes, "top_ops_self_cpu": top,
            "profiler_table": table}


# ---------------------------------------------------------------------------------------------- micro-benchmarks


def micro(params: list[torch.Tensor], repeats: int) -> dict[str, Any]:
    """One pass over all parameters, several ways; each pass's wall seconds, interleaved over ``repeats``."""
    seed = step_seed(0, 123)
    keys = [tensor_key(f"p{i}") for i in range(len(params))]
    seeds = [tensor_seed(seed, key) for key in keys]
    largest = max(p.numel() for p in params)
    scratch = torch.empty(largest, dtype=torch.float32)
    zs = [torch.empty(p.shape, dtype=torch.float32) for p in params]  # preallocated, for the parts
    pool = ThreadPoolExecutor(max_workers=2)

    def library_pass() -> None:  # = perturb_: generator, new fp32 z, normal_, add_
        for p, s in zip(params, seeds):
            z = fill_noise_(p.new_empty(p.shape, dtype=torch.float32), s)
            p.add_(z, alpha=EPS)

    def generators_only() -> None:
        for s in seeds:
            make_generator(s, "cpu")

    def allocate_and_touch() -> None:  # what a fresh z costs before any noise: allocation + first-touch page faults
        for p in params:
            p.new_empty(p.shape, dtype=torch.float32).fill_(0.0)

    def touch_reused() -> None:
        for z in zs:
            z.fill_(0.0)

    def normal_into_preallocated() -> None:
        for z, s in zip(zs, seeds):
            z.normal_(generator=make_generator(s, "cpu"))

    def add_only() -> None:
        for p, z in zip(params, zs):
            p.add_(z, alpha=EPS)

    def reused_buffer_pass() -> None:  # fix 1: draw into one reused buffer (no allocation, no page faults)
        for p, s in zip(params, seeds):
            z = scratch[: p.numel()].view(p.shape)
            fill_noise_(z, s)
            p.add_(z, alpha=EPS)

    def pipelined_pass() -> None:  # fix 2: the next tensors' noise drawn on worker threads while this one is added
        def draw(i: int) -> torch.Tensor:
            return fill_noise_(params[i].new_empty(params[i].shape, dtype=torch.float32), seeds[i])

        ahead = 2
        futures = [pool.submit(draw, i) for i in range(min(ahead, len(params)))]
        for i, p in enumerate(params):
            z = futures[i].result()
            if i + ahead < len(params):
                futures.append(pool.submit(draw, i + ahead))
            p.add_(z, alpha=EPS)
            futures[i] = None  # free z

    variants: dict[str, Callable[[], None]] = {
        "library pass (perturb_)": library_pass,
        "generators only": generators_only,
        "allocate + first touch of z": allocate_and_touch,
        "touch of a reused z": touch_reused,
        "normal_ into preallocated z": normal_into_preallocated,
        "add_ only": add_only,
        "fix 1: reused noise buffer": reused_buffer_pass,
        "fix 2: noise drawn ahead on 2 threads": pipelined_pass,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in variants.items():
            tick = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - tick)

    # Both fixes must give bitwise the library's z: compare the noise each way on copies of the parameters.
    def noise_after(pass_fn: Callable[[], None]) -> list[torch.Tensor]:
        saved = [p.clone() for p in params]
        for p in params:
            p.zero_()
        pass_fn()
        out = [p.clone() for p in params]
        for p, s in zip(params, saved):
            p.copy_(s)
        return out

    reference = noise_after(library_pass)
    identical = {
        name: all(torch.equal(a, b) for a, b in zip(reference, noise_after(variants[name])))
        for name in ("fix 1: reused noise buffer", "fix 2: noise drawn ahead on 2 threads")
    }
    pool.shutdown()
    library = statistics.median(samples["library pass (perturb_)"])
    return {
        "numel": sum(p.numel() for p in params),
        "tensors": len(params),
        "repeats": repeats,
        "passes": {
            name: {"median_s": statistics.median(v), "vs_library_pass": statistics.median(v) / library, "samples": v}
            for name, v in samples.items()
        },
        "bitwise_identical_to_library": identical,
    }


@contextlib.contextmanager
def reused_noise_buffer(params: list[torch.Tensor]) -> Iterator[None]:
    """Fix 1 inside real steps: dense z drawn into one reused fp32 buffer (the largest tensor's size) instead of a
    fresh tensor per call. Safe here only because every caller in a ZO-SGD (momentum 0) step consumes z before the
    next draw; this patches DenseDirection.sample in this process only."""
    scratch = torch.empty(max(p.numel() for p in params), dtype=torch.float32)
    original = directions_module.DenseDirection.sample

    def sample(self: Any, param: torch.Tensor, seed: int) -> torch.Tensor:
        if param.device != scratch.device:
            return original(self, param, seed)
        return directions_module.fill_noise_(scratch[: param.numel()].view(param.shape), seed, self.distribution)

    directions_module.DenseDirection.sample = sample
    try:
        yield
    finally:
        directions_module.DenseDirection.sample = original


def ab_steps(model: torch.nn.Module, tokens: torch.Tensor, repeats: int) -> dict[str, Any]:
    """Whole steps, interleaved: the two-forward floor, the library's dense ZO-SGD step, and the same step with
    fix 1 (reused noise buffer); medians and ratios to the floor. Also checks that both give the same weights."""
    from benchmarks.common import Timer

    loss_fn = lm_loss(model, tokens)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = ZOSGD(named, lr=LR, eps=EPS)
    counter = {"step": 0}

    def zo(fixed: bool) -> Callable[[], float]:
        def step() -> float:
            k = counter["step"] = counter["step"] + 1
            with reused_noise_buffer([p for _, p in named]) if fixed else contextlib.nullcontext():
                optimizer.step(loss_fn, step=k)
            return optimizer.engine.last.forward_seconds

        return step

    floor = two_forwards(loss_fn)

    # Same seed, same start: the fixed step must leave bitwise the same weights as the library's.
    saved = [p.detach().clone() for _, p in named]
    optimizer.step(loss_fn, step=0)
    after_library = [p.detach().clone() for _, p in named]
    with torch.no_grad():
        for (_, p), s in zip(named, saved):
            p.copy_(s)
    with reused_noise_buffer([p for _, p in named]):
        optimizer.step(loss_fn, step=0)
    identical = all(torch.equal(p, a) for (_, p), a in zip(named, after_library))
    del saved, after_library

    variants = {"floor (2 forwards)": floor, "zo-dense (library)": zo(False), "zo-dense + fix 1": zo(True)}
    timer = Timer()
    for fn in variants.values():
        fn()
    for _ in range(repeats):
        for name, fn in variants.items():
            timer.run(name, fn)
    return {"repeats": repeats, "same_weights_after_one_step": identical, "results": timer.summary("floor (2 forwards)")}


def render(report: dict[str, Any]) -> str:
    prof, mic = report["profile"], report["micro"]
    lines = [f"{report['model']}, fp32, batch {report['batch']}x{report['length']}, dense ZO-SGD, "
             f"{prof['steps']} profiled steps; machine {report['machine']}", "",
             "Phases per step (inclusive CPU time, from record_function scopes):"]
    for label, row in prof["scopes"].items():
        lines.append(f"  {label:<16} {row['total_s']:8.3f} s   calls/step {row['calls_per_step']:.0f}")
    lines += ["", "Top aten ops by self CPU time per step (forward ops included):"]
    for row in prof["top_ops_self_cpu"][:15]:
        lines.append(f"  {row['op']:<40} {row['self_s_per_step']:8.3f} s   calls/step {row['calls_per_step']:.0f}")
    lines += ["", f"One pass over {mic['numel'] / 1e6:.1f}M parameters in {mic['tensors']} tensors "
              f"(median of {mic['repeats']}, interleaved):"]
    for name, row in mic["passes"].items():
        lines.append(f"  {name:<40} {row['median_s']:8.3f} s   ({row['vs_library_pass']:.2f}x library pass)")
    lines.append(f"  bitwise identical to the library's z: {mic['bitwise_identical_to_library']}")
    ab = report.get("ab_steps")
    if ab:
        lines += ["", f"Whole steps, interleaved (median of {ab['repeats']}); same weights after a step with and "
                  f"without fix 1: {ab['same_weights_after_one_step']}"]
        for name, row in ab["results"].items():
            lines.append(f"  {name:<24} {row['median_s']:8.3f} s   perturb+update {row['perturb_update_s']:6.3f} s   "
                         f"{row['vs_floor']:.2f}x floor")
    lines += ["", "Full torch.profiler table (sorted by self CPU time):", prof["profiler_table"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="opt-125m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--micro-repeats", type=int, default=5)
    parser.add_argument("--skip-profile", action="store_true", help="no torch.profiler run")
    parser.add_argument("--ab-repeats", type=int, default=5,
                        help="whole steps: floor vs library dense step vs the step with fix 1 (0: skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="report name (default: profile_step[_<model>])")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.out or ("profile_step" if args.model == "opt-125m" else f"profile_step_{args.model}")
    load_before = machine()["loadavg_1_5_15"]
    model = build_model(args.model)
    tokens = token_batch(args.batch, args.length, model.config.vocab_size)
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        mic = micro(params, args.micro_repeats)
    prof = {"steps": 0, "scopes": {}, "top_ops_self_cpu": [], "profiler_table": "(skipped)"}
    if not args.skip_profile:
        prof = profile_steps(model, tokens, args.steps)
    ab = ab_steps(model, tokens, args.ab_repeats) if args.ab_repeats else None
    report = {"model": MODELS[args.model][1], "dtype": "fp32", "batch": args.batch, "length": args.length,
              "machine": machine(), "loadavg_before": load_before, "source": source_info(),
              "command": "python -m benchmarks.profile_step " + " ".join(sys.argv[1:]), "profile": prof, "micro": mic,
              "ab_steps": ab}
    path = write_report(name, report)
    text = render(report)
    (RESULTS / f"{name}.txt").write_text(text + "\n")
    print(text[: text.find("Full torch.profiler table")])
    print(f"written to {path} and {RESULTS / (name + '.txt')}")


if __name__ == "__main__":
    main()
