"""Low-rank perturbations for matrices: LOZO (arXiv 2410.07698) and SubZero (arXiv 2410.08989).

A tensor of shape (m, ...) is treated as an m × n matrix, n = numel / m.

- ``lozo``: z = U·Vᵀ / √r, U (m × r) drawn from the step seed, V (n × r) drawn at each refresh and kept between.
  The 1/√r makes each entry of z unit-variance, so ε and lr carry over from dense MeZO (our normalisation).
- ``subzero``: z = U·S·Vᵀ · √(mn)/r with column-orthonormal U (m × r), V (n × r) (QR of Gaussians) kept between
  refreshes and an r × r Gaussian S drawn from the step seed; the scale is SubZero's, giving E‖z‖² = mn.

U (LOZO) and S (SubZero) come from the same per-tensor stream as any direction, so the update regenerates exactly
the U or S of the perturbation, on refresh steps too (the LOZO reference code does not; see the field notes).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from zolightning.functional.directions import TensorDirection
from zolightning.functional.noise import NoiseSource, sample_noise
from zolightning.functional.checks import check_choice, choices_of

LowRankMode = Literal["lozo", "subzero"]
LOW_RANK_MODES = choices_of(LowRankMode)


def matrix_shape(param: Tensor) -> tuple[int, int]:
    """(m, n) of ``param`` viewed as a matrix: its first dimension by the product of the rest."""
    rows = param.shape[0]
    return rows, param.numel() // rows


def effective_rank(param: Tensor, rank: int) -> int:
    """``rank`` capped at the matrix's smaller side."""
    return min(rank, *matrix_shape(param))


def draw_factors(param: Tensor, mode: LowRankMode, rank: int, seed: int) -> tuple[Tensor, ...]:
    """The factors kept between refreshes: ``(V,)`` for LOZO, ``(U, V)`` orthonormal for SubZero (fp32)."""
    rows, cols = matrix_shape(param)
    rank = effective_rank(param, rank)
    if mode == "lozo":
        return (sample_noise((cols, rank), seed, device=param.device),)
    if mode == "subzero":
        left = torch.linalg.qr(sample_noise((rows, rank), seed, device=param.device)).Q
        right = torch.linalg.qr(sample_noise((cols, rank), seed + 1, device=param.device)).Q
        return left.contiguous(), right.contiguous()
    check_choice(mode, LowRankMode, "mode")
    raise AssertionError(mode)  # unreachable: check_choice raised


class LowRankDirection(TensorDirection):
    """z of rank ≤ r for one tensor, from kept factors and a per-step draw (see the module docstring)."""

    def __init__(self, mode: LowRankMode, factors: tuple[Tensor, ...]) -> None:
        check_choice(mode, LowRankMode, "mode")
        self.mode: LowRankMode = mode
        self.factors = factors
        self.rank = factors[-1].shape[1]

    def sample(self, param: Tensor, seed: int, noise: NoiseSource = "torch") -> Tensor:
        rows, cols = matrix_shape(param)
        if self.mode == "lozo":
            (right,) = self.factors
            left = sample_noise((rows, self.rank), seed, device=param.device, noise=noise)
            z = (left @ right.T).div_(math.sqrt(self.rank))
        else:
            left, right = self.factors
            core = sample_noise((self.rank, self.rank), seed, device=param.device, noise=noise)
            z = (left @ core @ right.T).mul_(math.sqrt(rows * cols) / self.rank)
        return z.reshape(param.shape)

    def subspace_energy(self, gradient: Tensor) -> Tensor:
        # LOZO's z = U·Vᵀ spans {A·Vᵀ}: the rows' projection onto span(V). SubZero's z = U·S·Vᵀ spans {U·M·Vᵀ}.
        matrix = gradient.float().reshape(matrix_shape(gradient))
        if self.mode == "lozo":
            (right,) = self.factors
            return (matrix @ torch.linalg.qr(right).Q).square().sum()
        left, right = self.factors
        return (left.T @ matrix @ right).square().sum()
