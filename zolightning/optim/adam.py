"""ZO-Adam: Adam on the zeroth-order gradient estimate g·z (ZO-Bench's ZO-Adam; MeZO's Adam variant)."""

from __future__ import annotations

from typing import Literal

import torch

from zolightning.engine.measurement import Measurement
from zolightning.functional.adam import zo_adam_update_
from zolightning.functional.rounding import LowPrecisionUpdate
from zolightning.optim.optimizer import ParamsT, ZOOptimizer

InactiveState = Literal["keep", "drop"]


class ZOAdam(ZOOptimizer):
    """Adam (with decoupled weight decay) fed the ZO estimate g·z of each active tensor.

    Args:
        params: parameters, param-group dicts or ``named_parameters()``.
        lr: learning rate (default 1e-4; ZO-Adam needs a far smaller lr than ZO-SGD's relative to Adam with backprop,
            since Adam normalises the very noisy per-coordinate estimate).
        eps: perturbation scale ε (default 1e-3).
        betas: (β₁, β₂), the moments' decay rates (default (0.9, 0.999)).
        adam_eps: Adam's ε added to √v̂ (default 1e-8).
        weight_decay: decoupled decay λ (AdamW; default 0). Not applied to 1-D tensors unless ``decay_1d``.
        decay_1d: also decay 1-D tensors (default ``False``).
        inactive_state: ``keep`` (default) keeps a tensor's moments while it is inactive; ``drop`` frees them when the
            tensor leaves the step's plan, so with MeZO-BCD the moments live for the active block alone (and restart
            when the block comes back).
        low_precision: how updates reach bf16/fp16 weights: ``stochastic`` (default: stochastic rounding, unbiased,
            no memory, so updates below half an ulp still move the weights on average), ``master`` (an fp32 master
            copy of each active tensor: +4 bytes per active element) or ``nearest`` (plain rounding: updates below
            half an ulp vanish). fp32 weights ignore it.

    Memory: two fp32 moments per element of every tensor that has been active: 8 bytes per parameter, i.e. two fp32
    copies of the trainable weights for a dense plan, or of the active block alone with ``inactive_state="drop"``
    under BCD. State exists only for tensors that have been active.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-4,
        eps: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        weight_decay: float = 0.0,
        decay_1d: bool = False,
        inactive_state: InactiveState = "keep",
        low_precision: LowPrecisionUpdate = "stochastic",
    ) -> None:
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"`betas` must each be in [0, 1), got {tuple(betas)}.")
        if not adam_eps > 0.0:
            raise ValueError(f"`adam_eps` must be > 0, got {adam_eps}.")
        if inactive_state not in ("keep", "drop"):
            raise ValueError(f"`inactive_state` must be 'keep' or 'drop', got {inactive_state!r}.")
        defaults = dict(
            lr=lr, eps=eps, betas=(float(beta1), float(beta2)), adam_eps=adam_eps, weight_decay=weight_decay,
            decay_1d=decay_1d, inactive_state=inactive_state, low_precision=low_precision,
        )
        super().__init__(params, defaults)

    def _update(self, measurement: Measurement) -> None:
        groups = self.group_of()
        for entry, z, projected_gradient in self.directions(measurement):
            group = groups[id(entry.param)]
            state = self.state[entry.param]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(entry.data, dtype=torch.float32)
                state["exp_avg_sq"] = torch.zeros_like(entry.data, dtype=torch.float32)
            state["step"] += 1
            beta1, beta2 = group["betas"]
            decays = group["decay_1d"] or entry.param.dim() > 1
            with self.update_target(entry, group) as target:
                zo_adam_update_(
                    target,
                    z.mul(projected_gradient),
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    step=int(state["step"]),
                    lr=group["lr"] * entry.lr_scale,
                    beta1=beta1,
                    beta2=beta2,
                    adam_eps=group["adam_eps"],
                    weight_decay=group["weight_decay"] if decays else 0.0,
                )
        active = {id(entry.param) for entry in measurement.plan}
        for param in list(self.state):
            if id(param) not in active and groups[id(param)]["inactive_state"] == "drop":
                del self.state[param]
