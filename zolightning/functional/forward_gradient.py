"""The forward-gradient baseline (Baydin et al. 2022; ZO-Bench's "Forward-Grad"): the exact directional derivative
∇L·v along a random tangent v from one forward-mode pass (``torch.func.jvp``), instead of a finite difference.

It has no ε-bias and no cancellation error, but it is not memory-free: the tangents are a copy of the perturbed
tensors, and the forward carries a tangent for every activation (about twice the activation memory of a plain
forward). It shows users the accuracy–memory trade between forward-mode differentiation and ZO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from zolightning.functional.perturbation import PerturbationPlan

# Maps {parameter name: tensor} (the plan's tensors, by ActiveTensor.name) to the scalar loss.
Objective = Callable[[Mapping[str, Tensor]], Tensor]


def forward_gradient(objective: Objective, plan: PerturbationPlan, seed: int) -> Tensor:
    """L(θ) and ∇L·εz along the plan's directions, by ``torch.func.jvp``; the weights are never moved.

    Args:
        objective: the loss as a function of the plan's tensors (``{entry.name: tensor}``); it must be
            differentiable in forward mode (every op it uses needs a forward-AD formula).
        plan: the tensors and their directions z (any structure: dense, block, masked, low-rank).
        seed: the step seed.

    Returns:
        A (2,) fp32 tensor [L(θ), ∇L·εz]: the projected gradient of each tensor, ``derivative / ε``, is ∇L·z exactly,
        as the two-point estimate is in the limit ε → 0.
    """
    if any(entry.shard is not None for entry in plan):
        raise ValueError("`zo.estimator: forward-gradient` needs whole tensors (its tangents enter torch.func.jvp); "
                         "sharded weights train with the two-sided or one-sided estimator.")
    names = [entry.name for entry in plan]
    if len(set(names)) != len(names):
        raise ValueError("The plan names a tensor twice; forward gradients need one tangent per tensor name.")
    primals = {entry.name: entry.param.detach() for entry in plan}
    # The tangent of each tensor is εz, so the derivative is along the same vector a two-point estimate moves by.
    tangents = {entry.name: entry.direction_at(seed).mul_(entry.eps).to(entry.param.dtype) for entry in plan}

    def loss_of(params: Mapping[str, Tensor]) -> Tensor:
        value = objective(params)
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise TypeError("The forward-gradient objective must return a scalar tensor.")
        return value.reshape(()).float()

    # The fused attention kernels have no forward-AD formula; the math kernel is made of ops that do.
    with sdpa_kernel([SDPBackend.MATH]):
        loss, derivative = torch.func.jvp(loss_of, (primals,), (tangents,))
    return torch.stack([loss.detach(), derivative.detach()]).float().cpu()
