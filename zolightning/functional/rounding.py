"""Writing fp32 values into low-precision weights: round to nearest, or stochastically.

Below fp32 a ZO update smaller than half a unit in the last place (ulp) rounds away entirely: with bf16 weights of
magnitude 1 (ulp 2⁻⁷ ≈ 0.008) an update of 1e-4 never moves them. Stochastic rounding rounds up with probability equal
to the fraction of the ulp the value lies beyond the lower neighbour, so the expected written value is exact and tiny
updates survive on average.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from zolightning.functional.checks import check_choice

LowPrecisionUpdate = Literal["nearest", "stochastic", "master"]
FULL_PRECISION = (torch.float32, torch.float64)


def check_low_precision_update(mode: str) -> None:
    check_choice(mode, LowPrecisionUpdate, "low_precision")


@torch.no_grad()
def round_stochastic_(target: Tensor, value: Tensor, seed: int) -> Tensor:
    """Write ``value`` (fp32) into ``target`` (any floating dtype) with stochastic rounding; returns ``target``.

    Each element becomes one of the two representable neighbours of its value, the upper with probability
    (value − lower)/(upper − lower), drawn from a generator seeded with ``seed`` (so the rounding is reproducible and
    identical on every data-parallel rank). Exactly representable values are written unchanged.
    """
    nearest = value.to(target.dtype)
    error = value - nearest.float()
    toward = torch.where(error >= 0, torch.inf, -torch.inf).to(target.dtype)
    neighbour = torch.nextafter(nearest, toward)
    gap = neighbour.float() - nearest.float()
    # error / gap ∈ [0, 1/2]: the chance of leaving the nearest value for the neighbour on the value's side.
    probability = torch.where(gap != 0, error / gap, torch.zeros_like(error)).nan_to_num_(0.0)
    generator = torch.Generator(device=value.device).manual_seed(seed)
    # fp32 draws whatever the default dtype (bf16-true makes it bf16 inside training_step: 256 levels would bias it).
    draw = torch.rand(value.shape, generator=generator, device=value.device, dtype=torch.float32)
    target.copy_(torch.where(draw < probability, neighbour, nearest))
    return target
