"""``Estimator``: the protocol every gradient estimator follows.

An estimator says three things, and nothing else:

1. which points it evaluates (:meth:`Estimator.measure`, through a :class:`~zolightning.estimators.probe.Probe`);
2. which few numbers cross ranks: the (directions × k) tensor that :meth:`measure` returns, which the engine averages
   (or gathers, under query parallelism) before anything else reads it;
3. how those numbers become one :class:`~zolightning.functional.estimate.DirectionalEstimate` per direction
   (:meth:`Estimator.combine`).

q-direction averaging (n-SPSA) is every estimator's ``directions`` argument: q seeds per step, their estimates
averaged by the update. Adding an estimator is one file and a line in :mod:`zolightning.estimators.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from zolightning.functional.checks import check_int_at_least
from zolightning.functional.estimate import DirectionalEstimate, EstimateKind
from zolightning.estimators.probe import Probe


class Estimator(ABC):
    """Turns a step's seeds into estimates of the directional derivative along each direction.

    Args:
        directions: q, the directions per step (default 1). Their estimates are averaged by the update.

    Class attributes:
        kind: the kind of record :meth:`combine` fills.
        provides_center: whether L(θ) is available to optimizers that need it (HiZOO, ZO-SGD-Cons) when asked.
        reuses_prefix: whether its evaluations are plain forwards at moved weights, so that the unperturbed prefix of
            a layer stack can be computed once per step (:mod:`zolightning.engine.prefix_reuse`).
    """

    kind: ClassVar[EstimateKind]
    provides_center: ClassVar[bool] = False
    reuses_prefix: ClassVar[bool] = True

    def __init__(self, directions: int = 1) -> None:
        check_int_at_least(directions, 1, "num_directions")
        self.directions = directions

    @abstractmethod
    def points(self, center: bool) -> tuple[float, ...]:
        """The offsets (units of εz) evaluated along each direction, in order; empty for estimators that do not move
        the weights."""

    def forwards_per_step(self, center: bool = False) -> int:
        """Forward passes per step (for reports and budgets)."""
        return self.directions * len(self.points(center))

    def measure(self, probe: Probe, seeds: Sequence[int], center: bool = False) -> Tensor:
        """Evaluate every point of every direction: a (q, k) fp32 tensor of local losses, row j for ``seeds[j]``.
        θ is left where the last evaluation put it (the engine restores it)."""
        points = self.points(center)
        return torch.stack([torch.stack([probe.loss_at(seed, point) for point in points]) for seed in seeds])

    @abstractmethod
    def combine(self, numbers: Tensor, seeds: Sequence[int], center: bool = False) -> list[DirectionalEstimate]:
        """One estimate per row of ``numbers`` (after the cross-rank reduce or gather), seeded by ``seeds``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(directions={self.directions})"
