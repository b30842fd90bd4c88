"""The values that pass between the two calls of a ZO step, ``apply(measure(objective))``.

- :class:`UpdateTarget` (with its :class:`PointPlan`): what an update trains and needs measured, as data. The engine
  reads it and never calls the update back.
- :class:`Measurement`: what :meth:`~zolightning.engine.StepEngine.measure` found: seeds, plan, numbers, estimates.
  An update applies it; a trajectory records its numbers and replays them as a :class:`Recorded` value.
- :class:`Update`: the protocol of the second call (a ZO optimizer, or the adapter of a ``torch.optim`` one), for the
  code that drives steps (the module, diagnostics, replay); the engine itself never sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.optim import Optimizer

from zolightning.engine.prefix_reuse import PrefixReport
from zolightning.functional.estimate import DirectionalEstimate
from zolightning.functional.perturbation import Displacement, PerturbationPlan


@dataclass(frozen=True)
class PointPlan:
    """The evaluations an update needs besides the estimator's own points, declared by the update and made by
    ``measure`` (the update itself never calls the objective).

    Attributes:
        center: L(θ) too (HiZOO's curvature, ZO-SGD-Cons's comparison); needs an estimator that provides it
            (default ``False``).
        candidates: after the estimate, L(θ + c·η·ĝ) for each c, where η·ĝ is, per tensor, its lr × lr scale ×
            (clipped) projected gradient × z: the step a ZO-SGD update would take. ZO-SGD-Cons asks (−1, +1): the
            descent and the ascent candidate. Evaluated only on a step that updates, averaged over ranks like the
            estimate's losses (default none).
        one_direction: the update takes one direction per step (no q > 1, no query parallelism; default ``False``).
    """

    center: bool = False
    candidates: tuple[float, ...] = ()
    one_direction: bool = False


@dataclass(frozen=True)
class UpdateTarget:
    """What an update trains, as data the engine reads.

    Attributes:
        optimizer: the ``torch.optim`` optimizer whose ``param_groups`` hold the parameters, each group's lr and ε
            (read live, as torch's LR schedulers read them: a user's edit, a loaded state dict, a scheduler's step all
            show). The engine's ε schedule writes each group's ε as an LR scheduler writes lr.
        eps_key: the groups' key of ε: ``"eps"`` for the ZO optimizers, ``"zo_eps"`` for a plain ``torch.optim``
            optimizer (whose own ``"eps"``, where it has one, is Adam's denominator term).
        points: the evaluations the update needs (:class:`PointPlan`).
        preconditioner: the key, in ``optimizer.state[param]``, of a positive diagonal D (fp32, the parameter's
            shape) that shapes the directions, z = D^(−1/2)·u (HiZOO's ``"hessian"``; a tensor without one yet is
            planned with D = 1); ``None`` for none.
    """

    optimizer: Optimizer
    eps_key: str = "eps"
    points: PointPlan = PointPlan()
    preconditioner: str | None = None

    @property
    def name(self) -> str:
        """The optimizer's class name, for messages."""
        return type(self.optimizer).__name__


@dataclass(frozen=True)
class Recorded:
    """A step's numbers as a trajectory recorded them, given to ``measure`` instead of measuring (replay).

    Attributes:
        numbers: the step's :attr:`Measurement.numbers` (every rank's rows under query parallelism).
        world_size: the number of ranks the run had (query parallelism names every rank's seeds from it).
    """

    numbers: Tensor
    world_size: int = 1


@dataclass(frozen=True, eq=False)
class Measurement:
    """What one call of :meth:`~zolightning.engine.StepEngine.measure` found: a plain value, enough for the update
    to apply and for a trajectory to replay.

    Attributes:
        step: the step index the seeds derive from.
        seeds: each row's direction seed (every rank's under query parallelism).
        plan: the tensors the step perturbed, with their directions, ε and learning-rate scales; the update moves
            exactly these, along exactly these directions.
        numbers: (directions × k) fp32: the estimator's points, then the update's candidates (:class:`PointPlan`),
            after the mean over accumulated micro-batches and the cross-rank reduce or gather: with the seeds, all
            that determines the update (a trajectory records it).
        estimates: one :class:`~zolightning.functional.estimate.DirectionalEstimate` per row.
        candidate_losses: (directions × len(candidates)) fp32: L at each candidate point (empty without candidates).
        candidates: the candidate coefficients c, in column order of ``candidate_losses``.
        clip: each projected gradient is clipped to [−clip, clip] (``zo.clip``; ``None``: not clipped).
        updates: the update moves the weights: every loss is finite and this is not a micro-batch that only
            accumulates.
        micro_batches: micro-batches averaged into ``numbers`` (1 without accumulation; 0 for one that only
            accumulated).
        displaced: ``None`` when θ was brought back; otherwise where θ still is, for the update to bring back with
            the noise it draws anyway (``measure(defer_restore=True)``, one direction, an arithmetic restore).
        forward_seconds: wall time inside the objective (over the accumulated micro-batches too).
        prefix: which path the evaluations took (``None`` when prefix reuse is off or the engine has no module).
        group_lr, group_eps: each param group's lr and ε as the step planned with them.
    """

    step: int
    seeds: tuple[int, ...]
    plan: PerturbationPlan
    numbers: Tensor
    estimates: Sequence[DirectionalEstimate]
    candidate_losses: Tensor
    candidates: tuple[float, ...] = ()
    clip: float | None = None
    updates: bool = True
    micro_batches: int = 1
    displaced: Displacement | None = None
    forward_seconds: float = 0.0
    prefix: PrefixReport | None = None
    group_lr: tuple[float, ...] = ()
    group_eps: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.displaced is not None and not self.updates:
            raise ValueError("A measurement that does not update must leave θ restored (`displaced=None`).")

    @property
    def loss(self) -> Tensor:
        """The loss at θ, mean over directions (L0 when evaluated, else (L+ + L−)/2)."""
        return torch.stack([estimate.loss for estimate in self.estimates]).mean()

    @property
    def eps(self) -> float:
        """ε of the plan's first tensor (0 for an empty plan)."""
        return self.plan[0].eps if self.plan else 0.0

    @property
    def projected_gradient(self) -> float:
        """The mean over directions of the first tensor's projected gradient, as applied (clipped)."""
        eps = self.eps
        if not eps:
            return 0.0
        return sum(e.projected_gradient(eps, self.clip) for e in self.estimates) / len(self.estimates)

    @property
    def active(self) -> tuple[str, ...]:
        """The names of the plan's tensors, in plan order."""
        return tuple(entry.name for entry in self.plan)

    @property
    def active_numel(self) -> int:
        """Parameter elements in the plan."""
        return sum(entry.param.numel() for entry in self.plan)


class Update(Protocol):
    """The second call of a step: a ZO optimizer (:class:`~zolightning.optim.ZOOptimizer`), or
    :class:`~zolightning.optim.GradientUpdate` around a ``torch.optim`` optimizer.

    ``target()`` is what the engine is given (:meth:`~zolightning.engine.StepEngine.attach`); ``apply`` moves the
    weights along a measurement (``stepper``: the object whose ``step`` runs the update, Lightning's wrapped
    optimizer under the Trainer; default the optimizer itself); ``state_dict`` / ``load_state_dict`` are the
    optimizer's.
    """

    def target(self) -> UpdateTarget: ...

    def apply(self, measurement: Measurement, stepper: Any = None) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...
