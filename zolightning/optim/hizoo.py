"""HiZOO: ZO-SGD with diagonal-Hessian-informed perturbations (Zhao et al., arXiv 2402.15173)."""

from __future__ import annotations

import torch
from torch import Tensor

from zolightning.engine.measurement import Measurement, PointPlan, UpdateTarget
from zolightning.functional.hessian import hizoo_hessian_update_
from zolightning.functional.rounding import LowPrecisionUpdate
from zolightning.functional.sgd import zo_sgd_update_
from zolightning.optim.optimizer import ParamsT, ZOOptimizer


class HiZOO(ZOOptimizer):
    """Perturb along z = D^(−1/2)·u, with D a running diagonal-Hessian estimate; update θ ← θ − lr·(g·z + λθ); then
    fold the curvature along z, from a third forward L(θ), into D (see :mod:`zolightning.functional.hessian`).

    Args:
        params: parameters, param-group dicts or ``named_parameters()``.
        lr: learning rate (default 1e-6, MeZO's).
        eps: perturbation scale ε (default 1e-3).
        weight_decay: λ, as in ZO-SGD (default 0; not applied to 1-D tensors).
        hessian_smoothing: α, the weight of each step's curvature in D (default 1e-8). The curvature term grows with
            the number d of perturbed coordinates; keep α·d well below 1.
        low_precision: how updates reach bf16/fp16 weights: ``stochastic`` (default: stochastic rounding, unbiased,
            no memory, so updates below half an ulp still move the weights on average), ``master`` (an fp32 master
            copy of each active tensor: +4 bytes per active element) or ``nearest`` (plain rounding: updates below
            half an ulp vanish). fp32 weights ignore it.

    Costs 3 forwards a step and one fp32 D per element of every tensor that has been active (4 bytes per parameter:
    one fp32 copy of the trainable weights for a dense plan). One direction per step. Composes with every structure:
    D preconditions whatever direction the structure forms (dense, masked, low-rank, the active block): the engine
    reads it from the state (``state[param]["hessian"]``, the key :meth:`target` names) when it plans a step.

    The paper's code updates with the D after the curvature update; here the update moves along the very direction
    the estimate was taken along (the D before it), so the update direction equals the estimated one.
    """

    points = PointPlan(center=True, one_direction=True)

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-6,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        hessian_smoothing: float = 1e-8,
        low_precision: LowPrecisionUpdate = "stochastic",
    ) -> None:
        if not 0.0 < hessian_smoothing < 1.0:
            raise ValueError(f"`hessian_smoothing` must be in (0, 1), got {hessian_smoothing}.")
        defaults = dict(
            lr=lr, eps=eps, weight_decay=weight_decay, hessian_smoothing=hessian_smoothing, low_precision=low_precision,
        )
        super().__init__(params, defaults)

    def target(self) -> UpdateTarget:
        return UpdateTarget(self, "eps", self.points, preconditioner="hessian")

    def hessian(self, param: Tensor) -> Tensor:
        """D of ``param`` (fp32, its shape), created as ones the first time the tensor is updated (until then the
        engine plans with no D, which is D = 1: the same directions, bitwise)."""
        state = self.state[param]
        if "hessian" not in state:
            state["hessian"] = torch.ones_like(param, dtype=torch.float32)
        return state["hessian"]

    def _update(self, measurement: Measurement) -> None:
        (estimate,) = measurement.estimates
        if estimate.kind != "two-sided":
            raise ValueError(f"HiZOO needs a two-sided estimate with L(θ), got a {estimate.kind} one.")
        second_difference = abs(float(estimate.second_difference))
        groups = self.group_of()
        for entry, z, projected_gradient in self.directions(measurement):
            group = groups[id(entry.param)]
            decays = entry.param.dim() > 1
            with self.update_target(entry, group) as target:
                zo_sgd_update_(
                    target,
                    z,
                    projected_gradient,
                    lr=group["lr"] * entry.lr_scale,
                    weight_decay=group["weight_decay"] if decays else 0.0,
                )
            curvature = second_difference / (2.0 * entry.eps**2)
            hizoo_hessian_update_(self.hessian(entry.param), z, curvature, group["hessian_smoothing"])
