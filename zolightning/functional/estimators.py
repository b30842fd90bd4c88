"""Two-point (SPSA) estimates of the directional derivative along a seeded direction.

The estimate of one step is a scalar per tensor: with the plan's tensors moved by ±εᵢzᵢ,
``(L(θ+εz) − L(θ−εz)) / 2`` approximates Σᵢ εᵢ zᵢ·∇ᵢL, so the projected gradient of tensor i is that half
difference divided by εᵢ, and ``projected_gradient·zᵢ`` is an unbiased (as ε → 0) estimate of ∇ᵢL for Gaussian z.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from zolightning.functional.perturbation import PerturbationPlan, perturb_, restore_, snapshot

LossFn = Callable[[], Tensor | float]
Reduce = Callable[[Tensor], Tensor]
RestoreMode = Literal["arithmetic", "snapshot", "auto"]
RESTORE_MODES: tuple[str, ...] = ("arithmetic", "snapshot", "auto")

_FULL_PRECISION = (torch.float32, torch.float64)


@dataclass(frozen=True)
class TwoPointEstimate:
    """The outcome of one two-point evaluation.

    Attributes:
        seed: the step seed the direction was drawn from.
        loss_plus: L(θ + εz), a 0-dim fp32 tensor (after ``reduce``).
        loss_minus: L(θ − εz), a 0-dim fp32 tensor (after ``reduce``).
        forward_seconds: wall time spent inside the loss function (both forwards).
        total_seconds: wall time of the whole estimate (forwards + perturbation + restore).
        pending_offset: where the weights were left, in units of εz: 0 (restored), or −1 when the caller asked to
            fuse the restore with its update (``defer_restore``) and must add +εz itself.
    """

    seed: int
    loss_plus: Tensor
    loss_minus: Tensor
    forward_seconds: float = 0.0
    total_seconds: float = 0.0
    pending_offset: float = 0.0

    @property
    def half_difference(self) -> Tensor:
        """(L+ − L−) / 2: the directional derivative along εz."""
        return (self.loss_plus - self.loss_minus) / 2

    @property
    def loss(self) -> Tensor:
        """(L+ + L−) / 2: the loss at θ up to O(ε²), what a training log shows."""
        return (self.loss_plus + self.loss_minus) / 2

    def projected_gradient(self, eps: float) -> float:
        """(L+ − L−) / 2ε for a tensor perturbed with scale ``eps``."""
        return float(self.half_difference) / eps

    @property
    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.loss_plus) and torch.isfinite(self.loss_minus))


def resolve_restore_mode(plan: PerturbationPlan, mode: RestoreMode) -> Literal["arithmetic", "snapshot"]:
    """``auto`` restores arithmetically (−εz) in fp32/fp64 and from a snapshot in any lower precision,
    where θ + εz − εz does not round back to θ."""
    if mode not in RESTORE_MODES:
        raise ValueError(f"`restore` must be one of {RESTORE_MODES}, got {mode!r}.")
    if mode != "auto":
        return mode
    exact = all(entry.param.dtype in _FULL_PRECISION for entry in plan)
    return "arithmetic" if exact else "snapshot"


def evaluate_loss(loss_fn: LossFn) -> Tensor:
    """Call ``loss_fn`` under ``no_grad`` and return its value as a detached 0-dim fp32 tensor.

    Raises:
        TypeError: the loss is not a scalar.
    """
    with torch.no_grad():
        value = loss_fn()
    if not isinstance(value, Tensor):
        value = torch.tensor(float(value))
    if value.numel() != 1:
        raise TypeError(
            f"The ZO loss must be a scalar, got a tensor of shape {tuple(value.shape)}; reduce it (e.g. `.mean()`)."
        )
    return value.detach().reshape(()).float()


def two_point_estimate(
    loss_fn: LossFn,
    plan: PerturbationPlan,
    seed: int,
    *,
    restore: RestoreMode = "auto",
    reduce: Reduce | None = None,
    defer_restore: bool = False,
) -> TwoPointEstimate:
    """Evaluate the loss at θ + εz and θ − εz and return with θ restored.

    Args:
        loss_fn: evaluates the loss at the current weights (called twice, under ``no_grad``).
        plan: the tensors to perturb and their directions.
        seed: the step seed; each tensor's z comes from ``(seed, tensor key)``.
        restore: how θ is brought back: ``arithmetic`` (+εz, one more noise pass), ``snapshot`` (copy of the plan's
            tensors, exact in any dtype), or ``auto`` (snapshot only below fp32).
        reduce: applied to the stacked ``[L+, L−]`` (shape (2,)) before the estimate is formed, e.g. a mean over
            data-parallel ranks so that every rank sees the same losses.
        defer_restore: with an arithmetic restore, leave the weights at θ − εz on success (``pending_offset = −1``)
            so that the update can restore and move each tensor with one noise draw instead of two.

    The weights are restored in a ``finally`` on any exception (in either forward or in ``reduce``): a failed
    estimate leaves them as they were.
    """
    mode = resolve_restore_mode(plan, restore)
    saved = snapshot(plan) if mode == "snapshot" else None
    started = time.perf_counter()
    forward_seconds = 0.0
    offset = 0.0  # where the weights are now, in units of εz
    keep_offset = False
    try:
        perturb_(plan, seed, +1.0)
        offset = 1.0
        tick = time.perf_counter()
        loss_plus = evaluate_loss(loss_fn)
        forward_seconds += time.perf_counter() - tick
        perturb_(plan, seed, -2.0)
        offset = -1.0
        tick = time.perf_counter()
        loss_minus = evaluate_loss(loss_fn)
        forward_seconds += time.perf_counter() - tick
        losses = torch.stack([loss_plus, loss_minus])
        if reduce is not None:
            losses = reduce(losses).float()
        keep_offset = defer_restore and saved is None
    finally:
        if saved is not None:
            restore_(plan, saved)
        elif offset != 0.0 and not keep_offset:
            perturb_(plan, seed, -offset)
    return TwoPointEstimate(
        seed=seed,
        loss_plus=losses[0],
        loss_minus=losses[1],
        forward_seconds=forward_seconds,
        total_seconds=time.perf_counter() - started,
        pending_offset=offset if keep_offset else 0.0,
    )


@torch.no_grad()
def accumulate_gradient_(plan: PerturbationPlan, estimate: TwoPointEstimate, weight: float = 1.0) -> None:
    """Add the estimate ``weight·(projected gradient)·z`` to ``.grad`` of the plan's tensors, so that any
    ``torch.optim`` optimizer can step on it (``weight`` = 1/q averages q directions). Allocates ``.grad`` if absent.

    Memory: one gradient tensor per planned parameter (the plan's size, i.e. a full model copy for a dense plan).
    """
    half_difference = float(estimate.half_difference)
    for entry in plan:
        z = entry.direction_at(estimate.seed)
        coefficient = weight * half_difference / entry.eps
        grad = z.mul_(coefficient).to(entry.param.dtype)
        if entry.param.grad is None:
            entry.param.grad = grad
        else:
            entry.param.grad.add_(grad)
