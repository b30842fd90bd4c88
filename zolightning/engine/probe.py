"""``Probe``: evaluates the objective at points along one direction at a time, and always brings θ back.

The probe is the only object that moves the weights during a measurement. It knows where they are (a
:class:`~zolightning.functional.perturbation.Displacement`: the direction's seed and each tensor's coefficient), so
that whatever happens (an exception in a forward, a non-finite loss, a reduce that fails) the engine can return them
to θ in a ``finally``.

What "back" means, exactly:

- ``snapshot``: the plan's tensors are copied before the first move and copied back: bitwise equal, in any dtype.
- ``arithmetic``: the last move is undone by adding −c·z with the same z. In fp32 each element ends within
  ``2·ulp(|θ| + 2ε|z|)`` of its original value (three rounded adds of at most ½ ulp each), not bitwise.
"""

from __future__ import annotations

import time
from typing import Literal

import torch
from torch import Tensor

from zolightning.functional.estimate import LossFn, evaluate_loss
from zolightning.functional.perturbation import Displacement, PerturbationPlan, move_, restore_, snapshot

RestoreKind = Literal["arithmetic", "snapshot"]


class Probe:
    """Walks the plan's tensors to θ + cᵢ·zᵢ for a seeded direction and evaluates the objective there.

    Args:
        objective: the loss at the current weights (called under ``no_grad``); ``None`` for a step that only walks
            (nothing is evaluated, so nothing is snapshotted either).
        plan: the step's tensors and their directions.
        restore: ``snapshot`` (copy the plan's tensors first; exact in any dtype) or ``arithmetic`` (−c·z).

    Attributes:
        position: where θ is now (``None``: at θ).
        forward_seconds: wall time spent inside the objective (all evaluations so far).
        evaluations: how many times the objective ran.
    """

    def __init__(self, objective: LossFn | None, plan: PerturbationPlan, restore: RestoreKind) -> None:
        self.objective = objective
        self.plan = plan
        self.saved = snapshot(plan) if restore == "snapshot" and objective is not None else None
        self.position: Displacement | None = None
        self.forward_seconds = 0.0
        self.evaluations = 0

    @property
    def exact(self) -> bool:
        """Whether θ comes back bitwise (from a snapshot)."""
        return self.saved is not None

    def evaluate(self) -> Tensor:
        """The objective at the weights as they are now (a detached 0-dim fp32 tensor, not reduced)."""
        if self.objective is None:
            raise ValueError("This step has no objective (closure) to evaluate; pass `closure` to `step`.")
        started = time.perf_counter()
        try:
            return evaluate_loss(self.objective)
        finally:
            self.forward_seconds += time.perf_counter() - started
            self.evaluations += 1

    def loss_at(self, seed: int, offset: float) -> Tensor:
        """Move to θ + offset·εz (z from ``seed``, each tensor with its own ε) and evaluate there."""
        return self.loss_at_point(Displacement.along(self.plan, seed, offset))

    def loss_at_point(self, point: Displacement) -> Tensor:
        """Move to ``point`` and evaluate there (moving to another direction first brings θ back from the current
        one)."""
        self.move_to(point)
        return self.evaluate()

    def move_to(self, point: Displacement) -> None:
        """Move the plan's tensors from where they are to ``point`` (one add per tensor along the same direction)."""
        if self.position is not None and self.position.seed != point.seed:
            self.restore()
        here = self.position.coefficients if self.position is not None else (0.0,) * len(self.plan)
        if point.coefficients != here:
            move_(self.plan, point.seed, [there - now for there, now in zip(point.coefficients, here, strict=True)])
            self.position = point

    def release(self) -> Displacement | None:
        """Hand over where θ is, leaving it there: the caller (the update's noise pass) brings it back. Afterwards
        :meth:`restore` has nothing to undo."""
        position, self.position = self.position, None
        return position

    def restore(self) -> None:
        """Bring every tensor back to θ (from the snapshot when there is one) and clear the autocast cache (it keys its
        low-precision copies of weights by tensor, not by version)."""
        if self.position is not None:
            if self.saved is not None:
                restore_(self.plan, self.saved)
            else:
                move_(self.plan, self.position.seed, [-c for c in self.position.coefficients])
            self.position = None
        torch.clear_autocast_cache()
