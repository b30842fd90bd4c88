"""The one-sided (forward-difference) estimate: L(θ) and L(θ + εz)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from zolightning.estimators.base import Estimator
from zolightning.functional.estimate import DirectionalEstimate


class OneSided(Estimator):
    """g = (L(θ + εz) − L(θ)) / ε along each direction: the same 2 forwards as two-sided, an O(ε) bias, but L(θ)
    itself is measured (and logged)."""

    def points(self, center: bool) -> tuple[float, ...]:
        return (0.0, 1.0)

    def combine(self, numbers: Tensor, seeds: Sequence[int], center: bool = False) -> list[DirectionalEstimate]:
        return [
            DirectionalEstimate(seed=s, loss_center=row[0], loss_plus=row[1], kind="one-sided")
            for s, row in zip(seeds, numbers, strict=True)
        ]
