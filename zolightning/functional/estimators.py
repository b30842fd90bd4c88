"""Two-point (SPSA) estimates of the directional derivative along a seeded direction.

The estimate of one step is a scalar per tensor: with the plan's tensors moved by ±εᵢzᵢ,
``(L(θ+εz) − L(θ−εz)) / 2`` approximates Σᵢ εᵢ zᵢ·∇ᵢL, so the projected gradient of tensor i is that half
difference divided by εᵢ, and ``projected_gradient·zᵢ`` is an unbiased (as ε → 0) estimate of ∇ᵢL for Gaussian z.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from zolightning.functional.perturbation import PerturbationPlan, perturb_, restore_, snapshot

LossFn = Callable[[], Tensor | float]
Reduce = Callable[[Tensor], Tensor]
RestoreMode = Literal["arithmetic", "snapshot", "auto"]
RESTORE_MODES: tuple[str, ...] = ("arithmetic", "snapshot", "auto")

_FULL_PRECISION = (torch.float32, torch.float64)


EstimateKind = Literal["two-sided", "one-sided", "forward"]


@dataclass(frozen=True)
class TwoPointEstimate:
    """The outcome of one estimate of the directional derivative along εz.

    Three kinds share this record, so that every optimizer and every structure works with each of them:

    - ``two-sided`` (SPSA, MeZO): L+ = L(θ + εz) and L− = L(θ − εz); ``difference`` = (L+ − L−)/2.
    - ``one-sided``: L0 = L(θ) and L+; ``difference`` = L+ − L0 (one forward fewer than with ``center``, but bias O(ε)).
    - ``forward``: the exact directional derivative from forward-mode AD (``torch.func.jvp``), ``difference`` =
      ∇L·εz, and L0.

    Attributes:
        seed: the step seed the direction was drawn from.
        loss_plus: L(θ + εz), a 0-dim fp32 tensor (after ``reduce``); ``None`` for ``forward``.
        loss_minus: L(θ − εz); ``None`` unless ``two-sided``.
        loss_center: L(θ); present for ``one-sided`` and ``forward``, and for ``two-sided`` when asked for (HiZOO's
            curvature and ZO-SGD-Cons need it).
        derivative: ∇L·εz for ``forward``, else ``None``.
        kind: one of the three kinds above (default ``two-sided``).
        forward_seconds: wall time spent inside the loss function (all forwards).
        total_seconds: wall time of the whole estimate (forwards + perturbation + restore).
        pending_offset: where the weights were left, in units of εz: 0 (restored), or the offset (−1 two-sided, +1
            one-sided) when the caller asked to fuse the restore with its update (``defer_restore``).
    """

    seed: int
    loss_plus: Tensor | None
    loss_minus: Tensor | None = None
    loss_center: Tensor | None = None
    derivative: Tensor | None = None
    kind: EstimateKind = "two-sided"
    forward_seconds: float = 0.0
    total_seconds: float = 0.0
    pending_offset: float = 0.0

    @property
    def difference(self) -> Tensor:
        """The change of the loss along εz: (L+ − L−)/2, L+ − L0, or ∇L·εz, by kind (0-dim fp32)."""
        if self.kind == "forward":
            assert self.derivative is not None
            return self.derivative
        if self.kind == "one-sided":
            assert self.loss_plus is not None and self.loss_center is not None
            return self.loss_plus - self.loss_center
        assert self.loss_plus is not None and self.loss_minus is not None
        return (self.loss_plus - self.loss_minus) / 2

    @property
    def second_difference(self) -> Tensor:
        """L+ + L− − 2·L0 ≈ ε²·zᵀHz, the curvature along z (needs a two-sided estimate with the centre)."""
        if self.kind != "two-sided" or self.loss_center is None:
            raise ValueError("The second difference needs L+, L− and L0: a two-sided estimate with `center=True`.")
        assert self.loss_plus is not None and self.loss_minus is not None
        return self.loss_plus + self.loss_minus - 2 * self.loss_center

    @property
    def loss(self) -> Tensor:
        """The loss at θ as a training log shows it: L0 when it was evaluated, else (L+ + L−)/2 (exact up to O(ε²))."""
        if self.loss_center is not None:
            return self.loss_center
        assert self.loss_plus is not None and self.loss_minus is not None
        return (self.loss_plus + self.loss_minus) / 2

    def projected_gradient(self, eps: float, clip: float | None = None) -> float:
        """g = ``difference``/ε for a tensor perturbed with scale ``eps``, clipped to [−clip, clip] when given."""
        value = float(self.difference) / eps
        if clip is not None:
            value = max(-clip, min(clip, value))
        return value

    def values(self) -> Tensor:
        """The estimate's numbers as a (4,) fp32 tensor [L+, L−, L0, derivative] (absent ones are 0): what data
        parallelism sends. :meth:`from_values` inverts it given the kind and whether L0 was evaluated."""
        zero = torch.zeros(())
        parts = [self.loss_plus, self.loss_minus, self.loss_center, self.derivative]
        return torch.stack([zero if part is None else part.detach().reshape(()).float().cpu() for part in parts])

    @classmethod
    def from_values(cls, values: Tensor, seed: int, kind: EstimateKind, center: bool) -> TwoPointEstimate:
        """An estimate of ``kind`` from :meth:`values` (e.g. another rank's)."""
        plus, minus, middle, derivative = values.float().unbind()
        return cls(
            seed=seed,
            loss_plus=None if kind == "forward" else plus,
            loss_minus=minus if kind == "two-sided" else None,
            loss_center=middle if (center or kind != "two-sided") else None,
            derivative=derivative if kind == "forward" else None,
            kind=kind,
        )

    @property
    def is_finite(self) -> bool:
        parts = [self.loss_plus, self.loss_minus, self.loss_center, self.derivative]
        return all(bool(torch.isfinite(part)) for part in parts if part is not None)


def average_estimates(estimates: Sequence[TwoPointEstimate]) -> TwoPointEstimate:
    """The mean of estimates of one direction taken on different micro-batches: every loss averaged, so the result
    equals the estimate on the union of the micro-batches (for equal-sized micro-batches and a mean loss). The pending
    offset and seed of the last estimate are kept (it is the one whose restore may still be pending)."""
    if not estimates:
        raise ValueError("No estimates to average.")
    first, last = estimates[0], estimates[-1]
    if any(e.seed != first.seed or e.kind != first.kind for e in estimates):
        raise ValueError("Only estimates of the same direction (seed) and kind can be averaged.")

    def mean(field: str) -> Tensor | None:
        parts = [getattr(e, field) for e in estimates]
        if any(part is None for part in parts):
            return None
        return torch.stack(parts).mean()

    return replace(
        last,
        loss_plus=mean("loss_plus"),
        loss_minus=mean("loss_minus"),
        loss_center=mean("loss_center"),
        derivative=mean("derivative"),
        forward_seconds=sum(e.forward_seconds for e in estimates),
        total_seconds=sum(e.total_seconds for e in estimates),
    )


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
    one_sided: bool = False,
    center: bool = False,
    restore: RestoreMode = "auto",
    reduce: Reduce | None = None,
    defer_restore: bool = False,
) -> TwoPointEstimate:
    """Evaluate the loss at θ + εz and θ − εz (or θ and θ + εz) and return with θ restored.

    Args:
        loss_fn: evaluates the loss at the current weights (called under ``no_grad``; 2 or 3 times).
        plan: the tensors to perturb and their directions.
        seed: the step seed; each tensor's z comes from ``(seed, tensor key)``.
        one_sided: evaluate L(θ) and L(θ + εz) (2 forwards, 2 noise passes with a deferred restore) instead of
            L(θ ± εz).
        center: also evaluate L(θ) for a two-sided estimate (3 forwards).
        restore: how θ is brought back: ``arithmetic`` (−offset·εz, one more noise pass), ``snapshot`` (copy of the
            plan's tensors, exact in any dtype), or ``auto`` (snapshot only below fp32).
        reduce: applied to the stacked losses (shape (n,), in evaluation order) before the estimate is formed, e.g. a
            mean over data-parallel ranks so that every rank sees the same losses.
        defer_restore: with an arithmetic restore, leave the weights at the last evaluation point on success (see
            ``pending_offset``) so that the update can restore and move each tensor with one noise draw instead of two.

    The weights are restored in a ``finally`` on any exception (in any forward or in ``reduce``): a failed estimate
    leaves them as they were.
    """
    mode = resolve_restore_mode(plan, restore)
    saved = snapshot(plan) if mode == "snapshot" else None
    started = time.perf_counter()
    forward_seconds = 0.0
    offset = 0.0  # where the weights are now, in units of εz
    keep_offset = False
    values: list[Tensor] = []

    def evaluate_at(target: float) -> None:
        nonlocal offset, forward_seconds
        if target != offset:
            perturb_(plan, seed, target - offset)
            offset = target
        tick = time.perf_counter()
        values.append(evaluate_loss(loss_fn))
        forward_seconds += time.perf_counter() - tick

    points = (0.0, 1.0) if one_sided else ((0.0, 1.0, -1.0) if center else (1.0, -1.0))
    try:
        for point in points:
            evaluate_at(point)
        losses = torch.stack(values)
        if reduce is not None:
            losses = reduce(losses).float()
        keep_offset = defer_restore and saved is None
    finally:
        if saved is not None:
            if offset != 0.0:
                restore_(plan, saved)
        elif offset != 0.0 and not keep_offset:
            perturb_(plan, seed, -offset)
    if one_sided:
        named = dict(loss_center=losses[0], loss_plus=losses[1], kind="one-sided")
    elif center:
        named = dict(loss_center=losses[0], loss_plus=losses[1], loss_minus=losses[2])
    else:
        named = dict(loss_plus=losses[0], loss_minus=losses[1])
    return TwoPointEstimate(
        seed=seed,
        forward_seconds=forward_seconds,
        total_seconds=time.perf_counter() - started,
        pending_offset=offset if keep_offset else 0.0,
        **named,  # type: ignore[arg-type]
    )


@torch.no_grad()
def accumulate_gradient_(
    plan: PerturbationPlan, estimate: TwoPointEstimate, weight: float = 1.0, clip: float | None = None
) -> None:
    """Add the estimate ``weight·g·z`` to ``.grad`` of the plan's tensors, so that any ``torch.optim`` optimizer can
    step on it (``weight`` = 1/q averages q directions; g is the projected gradient, clipped to ±``clip`` when given).
    Allocates ``.grad`` if absent.

    Memory: one gradient tensor per planned parameter (the plan's size, i.e. a full model copy for a dense plan).
    """
    for entry in plan:
        z = entry.direction_at(estimate.seed)
        coefficient = weight * estimate.projected_gradient(entry.eps, clip)
        grad = z.mul_(coefficient).to(entry.param.dtype)
        if entry.param.grad is None:
            entry.param.grad = grad
        else:
            entry.param.grad.add_(grad)
