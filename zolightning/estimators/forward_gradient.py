"""The forward-gradient baseline as an estimator: the exact ∇L·z from forward-mode AD instead of a finite difference."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from zolightning.estimators.base import Estimator, ProbeLike
from zolightning.functional.estimate import DirectionalEstimate
from zolightning.functional.forward_gradient import forward_gradient


class _ObjectiveOf(nn.Module):
    """Holds the model as its child ``root`` so that ``torch.func.functional_call`` can swap the model's parameters
    while ``forward`` runs the step's objective (which reads them through the model)."""

    def __init__(self, root: nn.Module, objective: Callable[[], Tensor]) -> None:
        super().__init__()
        self.root = root
        self._objective = objective

    def forward(self) -> Tensor:
        return self._objective()


class ForwardGradient(Estimator):
    """∇L·εz along each direction by ``torch.func.jvp`` (Baydin et al. 2022; ZO-Bench's "Forward-Grad").

    No ε-bias and no cancellation error, but not memory-free: the tangents are a copy of the perturbed tensors and the
    forward carries a tangent per activation. The weights are never moved. One forward-mode pass per direction.

    Args:
        root: the model whose parameters the plan names (``named_parameters()`` names), e.g. the LightningModule.
        directions: q directions per step (default 1).
    """

    # Forward-mode passes carry tangents through every layer; a kept primal activation has none to give.
    reuses_prefix = False

    def __init__(self, root: nn.Module, directions: int = 1) -> None:
        super().__init__(directions)
        if not isinstance(root, nn.Module):
            raise TypeError(
                "ForwardGradient needs the model whose parameters are trained (`ForwardGradient(model)`), "
                f"got {type(root).__name__}."
            )
        self.root = root

    def points(self, center: bool) -> tuple[float, ...]:
        return ()

    def width(self, center: bool = False) -> int:
        return 2  # [L0, ∇L·εz]

    def forwards_per_step(self, center: bool = False) -> int:
        return self.directions

    def measure(self, probe: ProbeLike, seeds: Sequence[int], center: bool = False) -> Tensor:
        if probe.objective is None:
            raise ValueError("The forward gradient needs the step's objective (closure).")
        holder = _ObjectiveOf(self.root, probe.objective)

        def objective(params: Mapping[str, Tensor]) -> Tensor:
            return torch.func.functional_call(holder, {f"root.{n}": v for n, v in params.items()}, (), strict=False)

        rows = []
        for seed in seeds:
            started = time.perf_counter()
            rows.append(forward_gradient(objective, probe.plan, seed))
            probe.forward_seconds += time.perf_counter() - started
            probe.evaluations += 1
        return torch.stack(rows)

    def combine(self, numbers: Tensor, seeds: Sequence[int], center: bool = False) -> list[DirectionalEstimate]:
        return [
            DirectionalEstimate(seed=s, loss_plus=None, loss_center=row[0], derivative=row[1], kind="forward")
            for s, row in zip(seeds, numbers, strict=True)
        ]
