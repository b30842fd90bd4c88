"""The math of ZO diagnostics: how well M sampled estimates line up with the true gradient, and how noisy they are.

Notation (one step, one probe batch): M directions zᵢ over the plan's tensors (the step's own q first, then extra
ones), p̂ᵢ = (L(θ + εzᵢ) − L(θ − εzᵢ)) / 2ε the measured projected gradients, ĝᵢ = p̂ᵢ·zᵢ the single-direction
estimates, ḡ the step's estimate (the mean of the first q of them), g = ∇L(θ) the true gradient over every trainable
tensor, tᵢ = zᵢ·g the true projected gradients, G = [zᵢ·zⱼ] the directions' Gram matrix (M × M).

Everything is computed from p̂ (M), t (M), G (M × M), ‖g‖² and ‖P·g‖² (the gradient's energy inside the perturbed
subspace): no estimate ever has to be materialised, so the cost is one pass of noise over the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class EstimateStatistics:
    """What the diagnostics report for one step (``None`` where the true gradient was not computed).

    Attributes:
        cosine: cos(ḡ, g), the step's estimate (its q directions on the probe batch) against the true gradient.
        alignment: ‖P·g‖² / ‖g‖², the fraction of the gradient's squared norm inside the subspace the step perturbs
            (the active block, the mask's support, the low-rank factors' span): MeZO-BCD v2's subspace alignment.
        variance: tr Cov(ĝᵢ) over the M directions, (1/(M−1))·Σᵢ‖ĝᵢ − mean ĝ‖² (units: loss² / parameter²).
        relative_variance: ``variance`` / ‖g‖²; about d + 1 for dense Gaussian directions in d dimensions.
        snr: Σtᵢ² / Σ(p̂ᵢ − tᵢ)², the signal-to-noise ratio of the projected gradient: how far the finite difference
            is from the true directional derivative (ε too small in half precision, or too large for the curvature).
        projected_gradient_rms: √(mean p̂ᵢ²), available without the true gradient.
    """

    cosine: float | None
    alignment: float | None
    variance: float
    relative_variance: float | None
    snr: float | None
    projected_gradient_rms: float


def estimate_statistics(
    projected: Tensor,
    gram: Tensor,
    step_directions: int,
    true_projected: Tensor | None = None,
    gradient_norm_sq: float | None = None,
    subspace_norm_sq: float | None = None,
) -> EstimateStatistics:
    """The statistics above from p̂ (M), G (M × M), the step's q ≤ M, and optionally t (M), ‖g‖², ‖P·g‖²."""
    p = projected.double()
    G = gram.double()
    M = p.numel()
    if G.shape != (M, M) or not 1 <= step_directions <= M:
        raise ValueError(f"expected a {M}×{M} Gram matrix and 1 ≤ q ≤ {M}, got {tuple(G.shape)} and q={step_directions}.")
    weighted = G * p[:, None] * p[None, :]  # ĝᵢ·ĝⱼ
    if M > 1:
        total = weighted.sum()
        spread = weighted.diagonal().sum() - total / M  # Σᵢ‖ĝᵢ − mean‖²
        variance = float(spread) / (M - 1)
    else:
        variance = 0.0
    rms = float(p.square().mean().sqrt())
    if true_projected is None or gradient_norm_sq is None:
        return EstimateStatistics(None, None, variance, None, None, rms)
    t = true_projected.double()
    q = step_directions
    estimate_dot_gradient = float((p[:q] * t[:q]).sum()) / q
    estimate_norm = math.sqrt(max(float(weighted[:q, :q].sum()), 0.0)) / q
    gradient_norm = math.sqrt(gradient_norm_sq)
    cosine = estimate_dot_gradient / (estimate_norm * gradient_norm) if estimate_norm > 0 and gradient_norm > 0 else 0.0
    alignment = None
    if subspace_norm_sq is not None and gradient_norm_sq > 0:
        alignment = subspace_norm_sq / gradient_norm_sq
    error = float((p - t).square().sum())
    signal = float(t.square().sum())
    snr = signal / error if error > 0 else math.inf
    relative = variance / gradient_norm_sq if gradient_norm_sq > 0 else None
    return EstimateStatistics(cosine, alignment, variance, relative, snr, rms)


def gram_update_(gram: Tensor, directions: Tensor) -> None:
    """G += Z·Zᵀ for one tensor's M directions ``directions`` (M × n, on any device), in place; ``gram`` is fp64 on
    the CPU. The product runs where the directions are, in their dtype (fp32 accumulates blockwise), and only the
    M × M result travels."""
    flat = directions.reshape(directions.shape[0], -1)
    gram.add_((flat @ flat.T).to(gram.device, torch.float64))


def stacked_norm_sq(tensors: list[Tensor]) -> float:
    """Σ‖xᵢ‖² over ``tensors`` (fp64 accumulation)."""
    return float(sum((t.double().square().sum() for t in tensors), torch.zeros((), dtype=torch.float64)))
