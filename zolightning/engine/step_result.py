"""The engine's interfaces and its record of a step: the ``UpdateRule`` protocol (what the update stage must offer)
and ``StepResult`` (what one call of :meth:`~zolightning.engine.StepEngine.step` did)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor

from zolightning.engine.prefix_reuse import PrefixReport
from zolightning.estimators.probe import UpdateContext
from zolightning.functional.estimate import DirectionalEstimate
from zolightning.functional.perturbation import PerturbationPlan
from zolightning.structures.base import TrainableTensor


class UpdateRule(Protocol):
    """The update stage: a ZO optimizer (:class:`~zolightning.optim.ZOOptimizer`) or the adapter that feeds a plain
    ``torch.optim`` optimizer (:class:`~zolightning.optim.GradientUpdate`)."""

    param_groups: list[dict[str, Any]]
    needs_center: bool
    supports_many_directions: bool

    def tensors(self, names: Mapping[int, str] | None, eps_factor: float) -> list[TrainableTensor]: ...

    def prepare_plan(self, plan: PerturbationPlan) -> PerturbationPlan: ...

    def update(self, plan: PerturbationPlan, estimates: Sequence[DirectionalEstimate], context: UpdateContext) -> None: ...


@dataclass(frozen=True)
class StepResult:
    """What one call of :meth:`StepEngine.step` did.

    Attributes:
        loss: the loss at θ, mean over directions (L0 when evaluated, else (L+ + L−)/2).
        estimates: every direction's estimate (every rank's under query parallelism).
        updated: an update was applied (``False`` for an accumulated micro-batch or a skipped non-finite step).
        step: the step index the seeds were derived from.
        eps: ε of the plan's first tensor (after the schedule).
        projected_gradient: mean over directions of the first tensor's projected gradient, as applied (clipped).
        active_numel: parameter elements in the plan.
        forward_seconds: wall time inside the objective; ``total_seconds``: the whole step.
        prefix: which path the evaluations took (:class:`~zolightning.engine.prefix_reuse.PrefixReport`); ``None``
            when prefix reuse is off (``zo.prefix_reuse: false``) or the engine has no module.
        numbers: the (directions × k) fp32 tensor the estimates were combined from: on an update, after the mean over
            accumulated micro-batches and the cross-rank reduce or gather (every rank's rows under query parallelism),
            i.e. exactly what, with the seeds, determines the update (the trajectory log records it).
        micro_batches: micro-batches averaged into this update (1 without accumulation); 0 for a call that only
            accumulated (``update=False``).
        group_lr, group_eps: each param group's ``lr`` and ``eps`` as this step applied them.
        active: the names of the plan's tensors, in plan order.
    """

    loss: Tensor
    estimates: list[DirectionalEstimate]
    updated: bool
    step: int
    eps: float
    projected_gradient: float
    active_numel: int
    forward_seconds: float
    total_seconds: float
    prefix: PrefixReport | None = None
    numbers: Tensor | None = None
    micro_batches: int = 1
    group_lr: tuple[float, ...] = ()
    group_eps: tuple[float, ...] = ()
    active: tuple[str, ...] = ()
