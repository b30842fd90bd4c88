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
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from zolightning.functional.directions import DenseDirection, TensorDirection
from zolightning.functional.noise import Distribution, mix_seed, sample_noise
from zolightning.functional.structure import DirectionRule, TrainableTensor, tensor_key

LowRankMode = Literal["lozo", "subzero"]
LOW_RANK_MODES: tuple[str, ...] = ("lozo", "subzero")


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
    raise ValueError(f"`mode` must be one of {LOW_RANK_MODES}, got {mode!r}.")


class LowRankDirection(TensorDirection):
    """z of rank ≤ r for one tensor, from kept factors and a per-step draw (see the module docstring)."""

    def __init__(self, mode: LowRankMode, factors: tuple[Tensor, ...]) -> None:
        if mode not in LOW_RANK_MODES:
            raise ValueError(f"`mode` must be one of {LOW_RANK_MODES}, got {mode!r}.")
        self.mode: LowRankMode = mode
        self.factors = factors
        self.rank = factors[-1].shape[1]

    def sample(self, param: Tensor, seed: int) -> Tensor:
        rows, cols = matrix_shape(param)
        if self.mode == "lozo":
            (right,) = self.factors
            left = sample_noise((rows, self.rank), seed, device=param.device)
            z = (left @ right.T).div_(math.sqrt(self.rank))
        else:
            left, right = self.factors
            core = sample_noise((self.rank, self.rank), seed, device=param.device)
            z = (left @ core @ right.T).mul_(math.sqrt(rows * cols) / self.rank)
        return z.reshape(param.shape)

    def numel_generated(self, param: Tensor) -> int:
        return matrix_shape(param)[0] * self.rank if self.mode == "lozo" else self.rank * self.rank


class LowRankDirections(DirectionRule):
    """Low-rank directions on tensors of two or more dimensions, dense noise on 1-D tensors (biases, norms).

    Args:
        rank: r ≥ 1 (capped at each matrix's smaller side). LOZO uses 1 or 2; SubZero e.g. 24.
        refresh_interval: steps between factor refreshes (LOZO's ν, e.g. 50 or 100; SubZero's T₀, e.g. 1000).
        mode: ``lozo`` or ``subzero``.
        seed: seeds the factors; each tensor's factors at refresh k come from (seed, k, tensor key).
        distribution: noise of the dense fallback.

    Memory: the kept factors, (n × r) per matrix for LOZO and (m + n) × r for SubZero, fp32.
    """

    def __init__(
        self,
        rank: int = 2,
        refresh_interval: int = 50,
        mode: LowRankMode = "lozo",
        seed: int = 0,
        distribution: Distribution = "gaussian",
    ) -> None:
        if not (isinstance(rank, int) and rank >= 1):
            raise ValueError(f"`rank` must be an integer >= 1, got {rank!r}.")
        if not (isinstance(refresh_interval, int) and refresh_interval >= 1):
            raise ValueError(f"`refresh_interval` must be an integer >= 1, got {refresh_interval!r}.")
        if mode not in LOW_RANK_MODES:
            raise ValueError(f"`mode` must be one of {LOW_RANK_MODES}, got {mode!r}.")
        self.rank = rank
        self.refresh_interval = refresh_interval
        self.mode: LowRankMode = mode
        self.seed = seed
        self.dense = DenseDirection(distribution)
        self.factors: dict[str, tuple[int, tuple[Tensor, ...]]] = {}

    def direction(self, tensor: TrainableTensor, step: int) -> TensorDirection:
        if tensor.param.dim() < 2:
            return self.dense
        refresh = step // self.refresh_interval
        kept = self.factors.get(tensor.name)
        if kept is None or kept[0] != refresh:
            seed = mix_seed(self.seed, _FACTOR_STREAM, refresh, tensor_key(tensor.name))
            kept = (refresh, draw_factors(tensor.param, self.mode, self.rank, seed))
            self.factors[tensor.name] = kept
        return LowRankDirection(self.mode, kept[1])

    def state_dict(self) -> dict[str, Any]:
        """The kept factors with their refresh index, per tensor name (CPU tensors)."""
        return {name: {"refresh": r, "factors": [f.cpu() for f in fs]} for name, (r, fs) in self.factors.items()}

    def load_state_dict(self, state: Mapping[str, Any], device_of: Mapping[str, torch.device] | None = None) -> None:
        device_of = device_of or {}
        self.factors = {
            name: (int(entry["refresh"]), tuple(f.to(device_of.get(name, "cpu")) for f in entry["factors"]))
            for name, entry in state.items()
        }

    def __repr__(self) -> str:
        return f"LowRankDirections(rank={self.rank}, refresh_interval={self.refresh_interval}, mode={self.mode!r})"


_FACTOR_STREAM = 0x46414354
