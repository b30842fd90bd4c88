"""Shared helpers of the estimator, probe and engine tests: a small model, a batch, a dense plan, one estimate."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from zolightning.engine.probe import Probe
from zolightning.estimators import Estimator, TwoSided
from zolightning.functional.estimate import DirectionalEstimate
from zolightning.functional.perturbation import PerturbationPlan
from zolightning.structures import PerturbationStructure, TrainableTensor


def small_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))


def plan_for(model: torch.nn.Module, eps: float = 1e-3, distribution: str = "gaussian") -> PerturbationPlan:
    tensors = [TrainableTensor(n, p, eps) for n, p in model.named_parameters() if p.requires_grad]
    return PerturbationStructure(distribution=distribution).plan(tensors, step=0)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(32, 6, generator=generator), torch.randint(0, 3, (32,), generator=generator)


def estimate(
    loss_fn: Callable[[], torch.Tensor],
    plan: PerturbationPlan,
    seeds: int | Sequence[int],
    *,
    estimator: Estimator | None = None,
    restore: str = "arithmetic",
    center: bool = False,
) -> list[DirectionalEstimate]:
    """What the engine does around an estimator, without an update: measure along ``seeds``, restore θ, combine."""
    estimator = estimator if estimator is not None else TwoSided()
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    probe = Probe(loss_fn, plan, restore)  # type: ignore[arg-type]
    try:
        numbers = estimator.measure(probe, seeds, center)
    finally:
        probe.restore()
    return estimator.combine(numbers, seeds, center)


def assert_restored(plan: PerturbationPlan, before: Sequence[torch.Tensor], seed: int, restore: str) -> None:
    """The restore guarantee (``zolightning/engine/probe.py``): bitwise from a snapshot; arithmetically (fp32)
    each element within 2 ulp of |θ| + 2ε|z|, with z the direction the weights were displaced along."""
    for entry, old in zip(plan, before, strict=True):
        now = entry.param.detach()
        if restore == "snapshot":
            assert torch.equal(now, old), entry.name
            continue
        assert now.dtype == torch.float32
        z = entry.direction_at(seed)
        bound = 2 * torch.finfo(torch.float32).eps * (old.abs() + 2 * entry.eps * z.abs())
        excess = (now - old).abs() - bound
        assert bool((excess <= 0).all()), f"{entry.name}: off by up to {float(excess.max()):.3g} beyond 2 ulp"


def fails_at(call: int, model: torch.nn.Module, calls: list[int]) -> Callable[[], torch.Tensor]:
    """A cross-entropy objective on :func:`batch` that raises on its ``call``-th evaluation (counted in ``calls``)."""
    x, y = batch()

    def loss() -> torch.Tensor:
        calls.append(1)
        if len(calls) == call:
            raise RuntimeError("boom in the second forward" if call == 2 else f"boom in forward {call}")
        return torch.nn.functional.cross_entropy(model(x), y)

    return loss
