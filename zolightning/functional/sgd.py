"""The functional core of ZO-SGD: the update of one tensor along its regenerated direction."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def zo_sgd_update_(
    param: Tensor,
    z: Tensor,
    projected_gradient: float,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    momentum_buffer: Tensor | None = None,
) -> Tensor | None:
    """θ ← θ − lr·(g·z + λθ), or with momentum m ← μm + g·z + λθ; θ ← θ − lr·m.

    Args:
        param: the tensor to update in place (any shape, any floating dtype).
        z: its direction, the same shape (fp32; cast to ``param``'s dtype here).
        projected_gradient: the scalar g = (L+ − L−)/2ε for this tensor.
        lr: step size (already multiplied by any per-tensor scale).
        weight_decay: λ, decoupled from nothing: added to the gradient estimate as in MeZO.
        momentum: μ ∈ [0, 1); 0 disables the buffer entirely (no memory).
        momentum_buffer: the buffer from the previous step, or ``None`` on the first.

    Returns:
        The updated momentum buffer (fp32, ``param``'s shape) when ``momentum > 0``, else ``None``.
    """
    if momentum == 0.0:
        if weight_decay != 0.0:
            param.mul_(1.0 - lr * weight_decay)
        param.add_(z.to(param.dtype), alpha=-lr * projected_gradient)
        return None
    direction = z.mul(projected_gradient)
    if weight_decay != 0.0:
        direction.add_(param.float(), alpha=weight_decay)
    if momentum_buffer is None:
        momentum_buffer = direction
    else:
        momentum_buffer.mul_(momentum).add_(direction)
    param.add_(momentum_buffer.to(param.dtype), alpha=-lr)
    return momentum_buffer
