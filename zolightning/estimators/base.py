"""``Estimator``: the protocol every gradient estimator follows.

An estimator says three things, and nothing else:

1. which points it evaluates (:meth:`Estimator.measure`, through a :class:`ProbeLike`: the engine's
   :class:`~zolightning.engine.probe.Probe`, which moves the weights and always brings them back);
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
from typing import ClassVar, Protocol

import torch
from torch import Tensor

from zolightning.functional.checks import check_int_at_least
from zolightning.functional.estimate import DirectionalEstimate, LossFn
from zolightning.functional.perturbation import PerturbationPlan


class ProbeLike(Protocol):
    """What an estimator needs of the object that moves the weights for it (the engine's
    :class:`~zolightning.engine.probe.Probe`): it owns where θ is and brings it back; the estimator only names points.

    Attributes:
        objective: the step's loss at the current weights (``None`` when the step has none to call).
        plan: the step's tensors and their directions.
        forward_seconds: wall time inside the objective so far; ``evaluations``: how many times it ran (an estimator
            that calls the objective itself, as the forward gradient does, adds to both).
    """

    objective: LossFn | None
    plan: PerturbationPlan
    forward_seconds: float
    evaluations: int

    def evaluate(self) -> Tensor:
        """The objective at the weights as they are (a detached 0-dim fp32 tensor)."""
        ...

    def loss_at(self, seed: int, offset: float) -> Tensor:
        """The objective at θ + offset·εz, z drawn from ``seed``."""
        ...


class Estimator(ABC):
    """Turns a step's seeds into estimates of the directional derivative along each direction.

    Args:
        directions: q, the directions per step (default 1). Their estimates are averaged by the update.

    Class attributes:
        provides_center: whether L(θ) is available to optimizers that need it (HiZOO, ZO-SGD-Cons) when asked.
        reuses_prefix: whether its evaluations are plain forwards at moved weights, so that the unperturbed prefix of
            a layer stack can be computed once per step (:mod:`zolightning.engine.prefix_reuse`).
    """

    provides_center: ClassVar[bool] = False
    reuses_prefix: ClassVar[bool] = True

    def __init__(self, directions: int = 1) -> None:
        check_int_at_least(directions, 1, "num_directions")
        self.directions = directions

    @abstractmethod
    def points(self, center: bool) -> tuple[float, ...]:
        """The offsets (units of εz) evaluated along each direction, in order; empty for estimators that do not move
        the weights."""

    def width(self, center: bool = False) -> int:
        """Columns of each row :meth:`measure` returns (the points' losses, or what the estimator measures instead)."""
        return len(self.points(center))

    def forwards_per_step(self, center: bool = False) -> int:
        """Forward passes per step (for reports and budgets)."""
        return self.directions * len(self.points(center))

    def measure(self, probe: ProbeLike, seeds: Sequence[int], center: bool = False) -> Tensor:
        """Evaluate every point of every direction: a (q, k) fp32 tensor of local losses, row j for ``seeds[j]``.
        θ is left where the last evaluation put it (the engine restores it)."""
        points = self.points(center)
        return torch.stack([torch.stack([probe.loss_at(seed, point) for point in points]) for seed in seeds])

    @abstractmethod
    def combine(self, numbers: Tensor, seeds: Sequence[int], center: bool = False) -> list[DirectionalEstimate]:
        """One estimate per row of ``numbers`` (after the cross-rank reduce or gather), seeded by ``seeds``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(directions={self.directions})"
