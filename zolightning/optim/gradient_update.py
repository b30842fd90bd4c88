"""``GradientUpdate``: the update of a ZO step for a plain ``torch.optim`` optimizer (SGD, Adam, …)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from zolightning.engine.measurement import Measurement, UpdateTarget
from zolightning.engine.noise_workers import drawing_noise
from zolightning.functional.checks import check_positive
from zolightning.functional.perturbation import iter_directions
from zolightning.optim.settlement import Settlement

EPS_KEY = "zo_eps"
"""The key of ε in a plain optimizer's param groups (its own ``eps``, where it has one, is Adam's denominator term)."""



def sharded_weights_error(optimizer: object) -> ValueError:
    """The refusal of a ``torch.optim`` optimizer fed by ZO on sharded (FSDP2) weights, naming the fix."""
    return ValueError(
        f"{type(optimizer).__name__} (a torch.optim optimizer fed by ZO) cannot update sharded weights: it would need "
        "a whole-tensor .grad on every rank. Return zolightning.optim.ZOSGD from `configure_optimizers` (or drop "
        "it: the default is ZOSGD with the `zo:` settings), whose update moves each rank's shard in place."
    )

class GradientUpdate:
    """Applies a measurement through a plain ``torch.optim`` optimizer: writes the ZO estimate (1/q)·Σₖ gₖ·zₖ into
    ``.grad`` of the plan's tensors, then runs that optimizer's own ``step``. The same engine, seeds, estimators and
    structures as the ZO optimizers.

    Use::

        update = GradientUpdate(torch_optimizer, eps=1e-3)
        engine = StepEngine(zo_config)
        engine.attach(update.target())
        update.apply(engine.measure(closure))   # zero_grad, step(closure writing the estimate), zero_grad

    Args:
        optimizer: any ``torch.optim`` optimizer.
        eps: the initial perturbation scale ε, written into each of its param groups as ``zo_eps`` where a group has
            none: from then on the groups own it, as they own lr (``group["zo_eps"] = x`` takes effect at the next
            step; a checkpoint of the optimizer keeps it).

    ``zo.lr_scales`` multiply the written estimate of matching tensors (an lr scale for SGD; Adam normalizes it
    away). Memory: one gradient-sized buffer per planned tensor, freed after the optimizer's step.
    """

    def __init__(self, optimizer: Optimizer, eps: float = 1e-3) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"GradientUpdate wraps a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        check_positive(eps, "eps", "It is the perturbation scale ε; MeZO uses 1e-3 for full fine-tuning.")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault(EPS_KEY, eps)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def target(self) -> UpdateTarget:
        """The optimizer's groups, with ε under ``zo_eps``; no extra points."""
        return UpdateTarget(self.optimizer, EPS_KEY)

    def apply(self, measurement: Measurement, stepper: Any = None) -> None:
        """``zero_grad``, then ``stepper.step(closure)`` with a closure that writes the estimate (:meth:`write`), then
        ``zero_grad``: torch's contract (the closure gives the loss and the gradient; the optimizer steps on it).

        Args:
            measurement: what to apply; one that does not update writes no gradient (the optimizer's step, which
                Lightning counts, then has nothing to apply).
            stepper: what steps the optimizer (default: the optimizer itself; under the Trainer, Lightning's
                ``LightningOptimizer`` around it, so that its hooks see the gradient with θ back in place).
        """
        stepper = self.optimizer if stepper is None else stepper
        # One settlement for every call of the closure: an optimizer that calls it several times (LBFGS) gets the
        # same gradient each time, and θ is brought back once.
        settlement = Settlement(measurement.plan, measurement.displaced)
        self.optimizer.zero_grad(set_to_none=True)
        try:
            stepper.step(closure=lambda: self.write(measurement, settlement))
        finally:
            settlement.finish()  # θ back even if the step failed before its closure ran
            self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def write(self, measurement: Measurement, settlement: Settlement | None = None) -> Tensor:
        """Set ``.grad`` of the plan's tensors to the estimate and return the loss, bringing back the measurement's
        displacement in the same noise pass (through ``settlement``, shared by every write of one step; default: a
        new one, so call it once per measurement). A measurement that does not update writes nothing."""
        settlement = Settlement(measurement.plan, measurement.displaced) if settlement is None else settlement
        if not measurement.updates:
            settlement.finish()
            return measurement.loss
        estimates = measurement.estimates
        weight = 1.0 / len(estimates)
        try:
            if any(entry.shard is not None for entry in measurement.plan):
                raise sharded_weights_error(self.optimizer)
            with drawing_noise():
                for entry in measurement.plan:
                    entry.param.grad = None
                for estimate in estimates:
                    for index, (entry, z) in enumerate(iter_directions(measurement.plan, estimate.seed)):
                        settlement.settle(index, z, estimate.seed)
                        gradient = estimate.projected_gradient(entry.eps, measurement.clip)
                        grad = z.mul_(weight * entry.lr_scale * gradient).to(entry.param.dtype)
                        if entry.param.grad is None:
                            entry.param.grad = grad
                        else:
                            entry.param.grad.add_(grad)
        finally:
            settlement.finish()
        return measurement.loss

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return f"GradientUpdate({type(self.optimizer).__name__})"
