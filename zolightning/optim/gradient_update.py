"""``GradientUpdate``: the update stage for a plain ``torch.optim`` optimizer (SGD, Adam, …)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from zolightning.estimators.probe import UpdateContext
from zolightning.functional.checks import check_positive
from zolightning.functional.estimate import DirectionalEstimate
from zolightning.functional.perturbation import PerturbationPlan, iter_directions
from zolightning.structures.base import TrainableTensor, trainable_tensors


class GradientUpdate:
    """Writes the ZO estimate (1/q)·Σₖ gₖ·zₖ into ``.grad`` of the plan's tensors, so that a plain ``torch.optim``
    optimizer's own ``step`` applies it: the same engine, seeds, estimators and structures as the ZO optimizers.

    Use::

        engine = StepEngine(zo_config, rule=GradientUpdate(torch_optimizer, eps=1e-3))
        torch_optimizer.zero_grad(set_to_none=True)
        torch_optimizer.step(lambda: engine.step(closure))   # the closure's loss, the estimate in .grad

    Args:
        optimizer: any ``torch.optim`` optimizer.
        eps: the perturbation scale ε (plain optimizers have none of their own; an Adam's ``eps`` is another thing).

    ``zo.lr_scales`` multiply the written estimate of matching tensors (an lr scale for SGD; Adam normalizes it
    away). Memory: one gradient-sized buffer per planned tensor, which the caller frees after the optimizer's step
    (``zero_grad(set_to_none=True)``).
    """

    needs_center = False
    supports_many_directions = True

    def __init__(self, optimizer: Optimizer, eps: float = 1e-3) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"GradientUpdate wraps a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        check_positive(eps, "eps", "It is the perturbation scale ε; MeZO uses 1e-3 for full fine-tuning.")
        self.optimizer = optimizer
        self.eps = eps

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def tensors(self, names: Mapping[int, str] | None, eps_factor: float) -> list[TrainableTensor]:
        return trainable_tensors(self.param_groups, names, eps_of=lambda group: self.eps * eps_factor)

    def prepare_plan(self, plan: PerturbationPlan) -> PerturbationPlan:
        return plan

    @torch.no_grad()
    def update(self, plan: PerturbationPlan, estimates: Sequence[DirectionalEstimate], context: UpdateContext) -> None:
        weight = 1.0 / len(estimates)
        for estimate in estimates:
            for entry, z in iter_directions(plan, estimate.seed):
                context.probe.settle(entry, z, estimate.seed)
                coefficient = weight * entry.lr_scale * estimate.projected_gradient(entry.eps, context.clip)
                grad = z.mul_(coefficient).to(entry.param.dtype)
                if entry.param.grad is None:
                    entry.param.grad = grad
                else:
                    entry.param.grad.add_(grad)

    def __repr__(self) -> str:
        return f"GradientUpdate({type(self.optimizer).__name__}, eps={self.eps})"
