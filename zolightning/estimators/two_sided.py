"""The two-point (SPSA) estimate of MeZO: L(θ + εz) and L(θ − εz)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from zolightning.estimators.base import Estimator
from zolightning.functional.estimate import DirectionalEstimate


class TwoSided(Estimator):
    """g = (L(θ + εz) − L(θ − εz)) / 2ε along each direction: 2 forwards, an O(ε²) bias (MeZO, Algorithm 1).

    With ``center`` (asked for by HiZOO and ZO-SGD-Cons) L(θ) is evaluated first: 3 forwards.
    """

    provides_center = True

    def points(self, center: bool) -> tuple[float, ...]:
        return (0.0, 1.0, -1.0) if center else (1.0, -1.0)

    def combine(self, numbers: Tensor, seeds: Sequence[int], center: bool = False) -> list[DirectionalEstimate]:
        if center:
            return [
                DirectionalEstimate(seed=s, loss_center=row[0], loss_plus=row[1], loss_minus=row[2])
                for s, row in zip(seeds, numbers, strict=True)
            ]
        return [
            DirectionalEstimate(seed=s, loss_plus=row[0], loss_minus=row[1]) for s, row in zip(seeds, numbers, strict=True)
        ]
