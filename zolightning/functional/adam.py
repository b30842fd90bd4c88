"""The functional core of ZO-Adam: Adam's moment updates fed with the ZO gradient estimate g·z of one tensor."""

from __future__ import annotations

import math

import torch
from torch import Tensor


@torch.no_grad()
def zo_adam_update_(
    param: Tensor,
    gradient: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    adam_eps: float,
    weight_decay: float = 0.0,
) -> None:
    """One Adam step of ``param`` on the estimate ``gradient`` (= g·z), with decoupled weight decay (AdamW).

    m ← β₁m + (1−β₁)ĝ;  v ← β₂v + (1−β₂)ĝ²;  θ ← θ(1 − lr·λ) − lr·m̂/(√v̂ + adam_eps), with m̂, v̂ bias-corrected.

    Args:
        param: the tensor to update in place (any floating dtype).
        gradient: the ZO estimate for it, fp32, ``param``'s shape (consumed: may be overwritten).
        exp_avg, exp_avg_sq: the fp32 moments m and v, updated in place.
        step: this tensor's update count, counting this one (1 on its first update); bias correction uses it.
        lr: step size (already multiplied by any per-tensor scale).
        beta1, beta2: the moments' decay rates.
        adam_eps: added to √v̂ (Adam's ε, not the perturbation scale).
        weight_decay: λ, decoupled from the moments.
    """
    exp_avg.mul_(beta1).add_(gradient, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, value=1.0 - beta2)
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    denominator = exp_avg_sq.sqrt().div_(math.sqrt(bias_correction2)).add_(adam_eps)
    update = exp_avg.div(denominator).mul_(lr / bias_correction1)
    if weight_decay != 0.0:
        param.mul_(1.0 - lr * weight_decay)
    param.sub_(update.to(param.dtype))
