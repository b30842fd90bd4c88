"""ZO-SGD-Cons: a conservative ZO-SGD that keeps the best of θ, θ − lr·g·z and θ + lr·g·z (ZO-Bench)."""

from __future__ import annotations

import math

import torch

from zolightning.engine.measurement import Measurement, PointPlan
from zolightning.optim.optimizer import ParamsT, ZOOptimizer

# The candidates, in the order a tie is broken: descend first, then ascend, then stay (ZO-Bench's order).
_DESCEND, _ASCEND, _STAY = -1.0, 1.0, 0.0


class ZOSGDCons(ZOOptimizer):
    """Each step estimates g from L(θ), L(θ + εz), L(θ − εz), has the two candidate moves θ ∓ lr·g·z evaluated too,
    and moves to whichever of the three points has the lowest loss (5 forwards a step). The loss never rises on the
    step's batch, at 2.5× MeZO's forward cost.

    Args:
        params: parameters, param-group dicts or ``named_parameters()``.
        lr: learning rate of the candidate moves (default 1e-6).
        eps: perturbation scale ε (default 1e-3).

    The candidates are points of the measurement (:attr:`points`), so the engine evaluates them, averages their
    losses over data-parallel ranks (the ranks choose alike) and restores θ; the update only moves to the chosen one.
    A trajectory records the five numbers, so a replay chooses alike. One direction per step; no memory.
    """

    points = PointPlan(center=True, candidates=(_DESCEND, _ASCEND), one_direction=True)

    def __init__(self, params: ParamsT, lr: float = 1e-6, eps: float = 1e-3) -> None:
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=0.0))

    def _update(self, measurement: Measurement) -> None:
        (estimate,) = measurement.estimates
        losses = dict(zip(measurement.candidates, measurement.candidate_losses[0].tolist()))
        assert estimate.loss_center is not None
        losses[_STAY] = float(estimate.loss_center)
        finite = {where: loss for where, loss in losses.items() if math.isfinite(loss)}
        best = min(finite, key=finite.__getitem__)  # L(θ) is finite on a step that updates
        if best == _STAY and measurement.displaced is None:
            return
        groups = self.group_of()
        for entry, z, projected_gradient in self.directions(measurement):
            step = groups[id(entry.param)]["lr"] * entry.lr_scale * projected_gradient
            if best != _STAY:
                entry.data.add_(z.to(entry.data.dtype), alpha=best * step)
        torch.clear_autocast_cache()
