"""Per-step wall time of ZO variants against the published MeZO procedure, backprop, and the two-forward floor.

All variants run in one process on the same model and batch, interleaved repeat by repeat, so that a noisy machine
affects them alike; the report gives medians and ratios. Each step is split into forward time and the rest
(perturbation, restore and update).

    python benchmarks/step_time.py                       # OPT-125m-shaped, fp32, batch 16 × 64, 5 repeats
    python benchmarks/step_time.py --repeats 9 --variants floor,mezo-reference,zo-dense,bcd-layer
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from benchmarks.common import Timer, lm_loss, machine, opt_125m_shaped, table, token_batch, write_report
from zolightning.functional.block_schedule import BlockSchedule
from zolightning.functional.block_selection import BlockSelection
from zolightning.functional.blocks import partition_blocks
from zolightning.functional.low_rank import LowRankDirections
from zolightning.functional.masked import SparseDirections
from zolightning.functional.noise import step_seed
from zolightning.functional.structure import PerturbationStructure, TrainableTensor, dense_structure
from zolightning.optim import ZOSGD

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--variants", default="all")
    args = parser.parse_args()

    model = opt_125m_shaped()
    tokens = token_batch(args.batch, args.length, model.config.vocab_size)
    loss_fn = lm_loss(model, tokens)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    tensors = [TrainableTensor(n, p, EPS) for n, p in named]
    optimizer = ZOSGD(named, lr=LR, eps=EPS)
    counter = {"step": 0}

    def zo_step(structure: PerturbationStructure, restore: str = "auto") -> Callable[[], float]:
        def step() -> float:
            k = counter["step"] = counter["step"] + 1
            optimizer.step(loss_fn, seed=step_seed(0, k), plan=structure.plan(tensors, k), restore=restore)
            return optimizer.last_estimate.forward_seconds

        return step

    def blocks(granularity: str) -> PerturbationStructure:
        partition = partition_blocks(model, granularity)
        schedule = BlockSchedule(len(partition), "cyclic")
        return PerturbationStructure(BlockSelection([b.param_names for b in partition], schedule), restore="snapshot")

    def floor() -> float:
        tick = time.perf_counter()
        with torch.no_grad():
            loss_fn()
            loss_fn()
        return time.perf_counter() - tick

    adam = torch.optim.Adam(params, lr=1e-5)

    def backprop() -> float:
        tick = time.perf_counter()
        loss = loss_fn()
        forward = time.perf_counter() - tick
        loss.backward()
        adam.step()
        adam.zero_grad(set_to_none=True)
        return forward

    variants: dict[str, Callable[[], float]] = {
        "floor (2 forwards)": floor,
        "mezo-reference": lambda: mezo_reference_step(params, loss_fn, seed=counter["step"]),
        "zo-dense": zo_step(dense_structure()),
        "zo-dense-rademacher": zo_step(dense_structure("rademacher")),
        "bcd-layer": zo_step(blocks("layer")),
        "bcd-sublayer": zo_step(blocks("sublayer")),
        "sparse-random-0.75": zo_step(PerturbationStructure(directions=SparseDirections(0.75, "random", refresh_interval=100))),
        "lozo-r2": zo_step(PerturbationStructure(directions=LowRankDirections(2, 50, "lozo"))),
        "backprop-adam": backprop,
    }
    if args.variants != "all":
        wanted = args.variants.split(",")
        variants = {name: fn for name, fn in variants.items() if name.split(" ")[0] in wanted}
    timer = Timer()
    for name, fn in variants.items():  # warm-up: allocator, thread pools, Adam state
        fn()
    for repeat in range(args.repeats):
        for name, fn in variants.items():
            timer.run(name, fn)
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    summary = timer.summary("floor (2 forwards)", "mezo-reference" if "mezo-reference" in variants else None)
    payload = {"model": "OPT-125m-shaped (random init)", "dtype": "fp32", "batch": args.batch, "length": args.length,
               "params": sum(p.numel() for p in params), "machine": machine(), "results": summary}
    path = write_report("step_time", payload)
    print(table(summary))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
