"""The forward-gradient baseline (Baydin et al. 2022; ZO-Bench's "Forward-Grad"): the exact directional derivative
∇L·v along a random tangent v from one forward-mode pass (``torch.func.jvp``), instead of a finite difference.

It has no ε-bias and no cancellation error, but it is not memory-free: the tangents are a copy of the perturbed
tensors, and the forward carries a tangent for every activation (about twice the activation memory of a plain
forward). It shows users the accuracy–memory trade between forward-mode differentiation and ZO.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from zolightning.functional.estimators import Reduce, TwoPointEstimate
from zolightning.functional.perturbation import PerturbationPlan

# Maps {parameter name: tensor} (the plan's tensors, by ActiveTensor.name) to the scalar loss.
Objective = Callable[[Mapping[str, Tensor]], Tensor]


def forward_gradient_estimate(
    objective: Objective, plan: PerturbationPlan, seed: int, *, reduce: Reduce | None = None
) -> TwoPointEstimate:
    """∇L·εz along the plan's directions, by ``torch.func.jvp``; the weights are never moved.

    Args:
        objective: the loss as a function of the plan's tensors (``{entry.name: tensor}``); it must be
            differentiable in forward mode (every op it uses needs a forward-AD formula).
        plan: the tensors and their directions z (any structure: dense, block, masked, low-rank).
        seed: the step seed.
        reduce: applied to ``[L, ∇L·εz]`` (shape (2,)), e.g. a mean over data-parallel ranks.

    Returns:
        A ``forward`` estimate: ``loss_center`` = L(θ), ``derivative`` = ∇L·εz, so that the projected gradient of each
        tensor, ``derivative / ε``, is ∇L·z exactly, as the two-point estimate is in the limit ε → 0.
    """
    started = time.perf_counter()
    names = [entry.name for entry in plan]
    primals = {entry.name: entry.param.detach() for entry in plan}
    # The tangent of each tensor is εz, so the derivative is along the same vector a two-point estimate moves by.
    tangents = {entry.name: entry.direction_at(seed).mul_(entry.eps).to(entry.param.dtype) for entry in plan}
    if len(set(names)) != len(names):
        raise ValueError("The plan names a tensor twice; forward gradients need one tangent per tensor name.")

    def loss_of(params: Mapping[str, Tensor]) -> Tensor:
        value = objective(params)
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise TypeError("The forward-gradient objective must return a scalar tensor.")
        return value.reshape(()).float()

    # The fused attention kernels have no forward-AD formula; the math kernel is made of ops that do.
    with sdpa_kernel([SDPBackend.MATH]):
        loss, derivative = torch.func.jvp(loss_of, (primals,), (tangents,))
    values = torch.stack([loss.detach(), derivative.detach()]).cpu()
    forward_seconds = time.perf_counter() - started
    if reduce is not None:
        values = reduce(values).float()
    return TwoPointEstimate(
        seed=seed,
        loss_plus=None,
        loss_center=values[0],
        derivative=values[1],
        kind="forward",
        forward_seconds=forward_seconds,
        total_seconds=time.perf_counter() - started,
    )
