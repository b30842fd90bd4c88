"""``Probe``: evaluates the objective at θ + offset·εz along one direction at a time, and always brings θ back.

The probe is the only object that moves the weights during an estimate. It knows where they are (which direction,
which offset in units of εz), so that whatever happens (an exception in a forward, a non-finite loss, a reduce that
fails) the engine can return them to θ in a ``finally``.

What "back" means, exactly:

- ``snapshot``: the plan's tensors are copied before the first move and copied back: bitwise equal, in any dtype.
- ``arithmetic``: the last move is undone by adding −offset·εz with the same z. In fp32 each element ends within
  ``2·ulp(|θ| + 2ε|z|)`` of its original value (three rounded adds of at most ½ ulp each), not bitwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from zolightning.functional.estimate import LossFn, Reduce, evaluate_loss
from zolightning.functional.perturbation import ActiveTensor, PerturbationPlan, perturb_, restore_, snapshot


class Probe:
    """Walks the plan's tensors to θ + offset·εz for a seeded direction and evaluates the objective there.

    Args:
        objective: the loss at the current weights (called under ``no_grad``).
        plan: the step's tensors and their directions.
        restore: ``snapshot`` (copy the plan's tensors first; exact in any dtype) or ``arithmetic`` (−offset·εz).
        reduce: maps a 1-D tensor of losses to their mean over data-parallel ranks (``None``: one process).

    Attributes:
        forward_seconds: wall time spent inside the objective (all evaluations so far).
        evaluations: how many times the objective ran.
    """

    def __init__(
        self,
        objective: LossFn | None,
        plan: PerturbationPlan,
        restore: Literal["arithmetic", "snapshot"],
        reduce: Reduce | None = None,
    ) -> None:
        self.objective = objective
        self.plan = plan
        self.reduce = reduce
        self.saved = snapshot(plan) if restore == "snapshot" and objective is not None else None
        self.seed: int | None = None
        self.offset = 0.0
        self.settled: set[int] = set()
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
        """Move to θ + offset·εz (z from ``seed``) and evaluate there. Moving to another direction first brings θ back
        from the current one."""
        if self.seed is not None and seed != self.seed:
            self.restore()
        if offset != self.offset:
            perturb_(self.plan, seed, offset - self.offset)
            self.seed, self.offset = seed, offset
        return self.evaluate()

    def reduced_loss_here(self) -> Tensor:
        """The objective at the current weights, averaged over ranks (for optimizers that compare candidates)."""
        value = self.evaluate().reshape(1)
        if self.reduce is not None:
            value = self.reduce(value).float()
        return value.reshape(())

    def settle(self, entry: ActiveTensor, z: Tensor, seed: int) -> None:
        """Bring one tensor back to θ with its already drawn z, so that the update shares the noise pass (three passes
        of noise per step instead of MeZO's four). Does nothing if this tensor is not displaced along ``seed``."""
        if self.offset and self.saved is None and seed == self.seed and id(entry) not in self.settled:
            entry.param.add_(z.to(entry.param.dtype), alpha=-self.offset * entry.eps)
            self.settled.add(id(entry))

    def restore(self) -> None:
        """Bring every tensor not yet settled back to θ (from the snapshot when there is one) and clear the
        autocast cache (it keys its low-precision copies of weights by tensor, not by version)."""
        if self.offset:
            if self.saved is not None:
                restore_(self.plan, self.saved)
            else:
                rest = [entry for entry in self.plan if id(entry) not in self.settled]
                if self.seed is not None:
                    perturb_(rest, self.seed, -self.offset)
            self.offset = 0.0
        self.seed = None
        self.settled = set()
        torch.clear_autocast_cache()


@dataclass
class UpdateContext:
    """What the update stage receives from the engine besides the plan and the estimates.

    Attributes:
        probe: the step's probe; an update calls :meth:`Probe.settle` on each tensor before moving it (fused
            restore), and candidate-comparing optimizers evaluate through :meth:`Probe.reduced_loss_here`.
        clip: clip each projected gradient to [−clip, clip] (``None``: no clipping).
        exact_restore: whether the step restores from snapshots (below fp32, or when asked), so that an optimizer
            that moves the weights itself (ZO-SGD-Cons) undoes its moves exactly too.
    """

    probe: Probe
    clip: float | None = None
    exact_restore: bool = False

