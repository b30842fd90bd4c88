"""The functional core of HiZOO (Zhao et al., arXiv 2402.15173): diagonal-Hessian-informed perturbations.

HiZOO keeps a diagonal estimate D of the Hessian (Σ⁻¹ in the paper; D = 1 at the start), perturbs along
z = D^(−1/2)·u with u ~ N(0, I), and after the step folds the curvature seen along z into D:

    D ← (1 − α)·D + α·|L+ + L− − 2·L0| / (2ε²) · D·u²

(the paper's Σ⁻¹ update, diag(Σ^(−1/2) u uᵀ Σ^(−1/2)) = D·u²). The update moves along the same z with the usual
projected gradient, so the step is θ ← θ − lr·g·D^(−1/2)·u: coordinates of high curvature take smaller steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zolightning.functional.directions import TensorDirection
from zolightning.functional.noise import NoiseSource


class PreconditionedDirection(TensorDirection):
    """z = D^(−1/2)·u, with u from ``base`` (dense, masked or low-rank) and D a positive diagonal of the tensor's shape.

    D is read when a direction is sampled, so it must not change between a step's perturbation and its update of
    that tensor.
    """

    def __init__(self, base: TensorDirection, hessian: Tensor) -> None:
        self.base = base
        self.hessian = hessian

    def sample(self, param: Tensor, seed: int, noise: NoiseSource = "torch") -> Tensor:
        return self.base.sample(param, seed, noise).mul_(self.hessian.rsqrt())

    def subspace_energy(self, gradient: Tensor) -> Tensor | None:
        # A positive diagonal maps a coordinate subspace (all entries, a mask's support) onto itself; it turns any
        # other subspace (a low-rank span) into one this class does not compute.
        return self.base.subspace_energy(gradient) if self.base.coordinate_subspace else None

    def __repr__(self) -> str:
        return f"PreconditionedDirection({self.base!r})"


@torch.no_grad()
def hizoo_hessian_update_(hessian: Tensor, z: Tensor, curvature: float, smoothing: float) -> None:
    """D ← (1 − α)·D + α·curvature·D·u², with u = D^(1/2)·z recovered from the preconditioned direction z.

    Args:
        hessian: D, fp32, updated in place (stays positive: every factor is).
        z: the direction the step used, D^(−1/2)·u (fp32, D's shape).
        curvature: |L+ + L− − 2·L0| / (2ε²) for this tensor's ε.
        smoothing: α ∈ (0, 1); keep α·d small (d = the number of perturbed coordinates): the curvature term scales
            with the whole perturbation's ‖u‖², about d.
    """
    # D·u² = D·(D^(1/2)·z)² = D²·z².
    squared = z.mul(hessian).square_()
    hessian.mul_(1.0 - smoothing).add_(squared, alpha=smoothing * curvature)
