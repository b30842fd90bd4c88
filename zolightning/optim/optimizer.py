"""``ZOOptimizer``: the base of zeroth-order optimizers that behave like ``torch.optim`` optimizers.

Each optimizer is the second of a ZO step's two calls: it holds param groups (lr, ε, weight decay, its own options)
and state, and :meth:`ZOOptimizer.apply` moves a :class:`~zolightning.engine.measurement.Measurement`'s tensors along
its estimated directions, on top of a function in :mod:`zolightning.functional`. ``step(closure)`` follows torch's
contract for optimizers that re-evaluate the model (like ``LBFGS``) and is exactly
``apply(engine.measure(closure))``: the optimizer's engine measures (calling the closure once per evaluation), then
the optimizer updates. The engine never calls the optimizer, and the update never calls the engine or the objective:
what an optimizer needs measured it declares as data (:meth:`ZOOptimizer.target`). No gradient is ever computed or
held.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer

from zolightning.config import ZOConfig
from zolightning.engine.measurement import Measurement, PointPlan, UpdateTarget
from zolightning.engine.noise_workers import drawing_noise
from zolightning.engine.step import REENTRANT_STEP, StepEngine
from zolightning.functional.checks import check_non_negative, check_positive
from zolightning.functional.estimate import DirectionalEstimate
from zolightning.functional.noise import mix_seed, tensor_seed
from zolightning.functional.perturbation import ActiveTensor
from zolightning.functional.rounding import FULL_PRECISION, check_low_precision_update, round_stochastic_
from zolightning.optim.settlement import Settlement

_ROUNDING_STREAM = 0x5352  # separates stochastic-rounding noise from the directions' noise
ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


class ZOOptimizer(Optimizer, metaclass=ABCMeta):
    """Base class: the update of the ZO step, with the ``torch.optim`` interface.

    Every group carries ``lr`` (step size), ``eps`` (perturbation scale ε, in parameter units; read by the engine's
    plan at every step, so ``group["eps"] = x`` takes effect at the next step, as ``group["lr"] = x`` does) and
    ``weight_decay``; every option of a subclass is in ``defaults`` (so in every group, its ``state_dict`` and a
    trajectory's header). The directions' seed is the engine's ``zo.seed``: an optimizer has none of its own.

    Class attributes:
        points: the evaluations the update needs besides the estimator's
            (:class:`~zolightning.engine.measurement.PointPlan`: L(θ), candidate steps, one direction only).

    Attributes:
        engine: the :class:`~zolightning.engine.StepEngine` that measures for this optimizer (made on first use with
            default settings; a ZOLightningModule gives its own). In a plain loop, install structures on it
            (``optimizer.engine.install(BlockSelection(), module=model)``) or give it another
            (``optimizer.use_engine(StepEngine(ZOConfig(seed=1)))``).
        last_estimate / last_estimates: the latest step's first / every direction's estimate.
    """

    points: ClassVar[PointPlan] = PointPlan()

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        check_low_precision_update(defaults.setdefault("low_precision", "stochastic"))
        check_non_negative(defaults["lr"], "lr")
        check_positive(defaults["eps"], "eps", "It is the perturbation scale ε; MeZO uses 1e-3 for full fine-tuning.")
        check_non_negative(defaults.get("weight_decay", 0.0), "weight_decay")
        super().__init__(params, defaults)
        self._engine: StepEngine | None = None
        self._rounding_seed = 0
        self._settling: Settlement | None = None

    # ------------------------------------------------------------------------------------------------ the step

    @property
    def engine(self) -> StepEngine:
        if self._engine is None:
            self.use_engine(StepEngine(ZOConfig()))
        assert self._engine is not None
        return self._engine

    def use_engine(self, engine: StepEngine) -> None:
        """Measure this optimizer's steps with ``engine`` (a module's, say): it is given :meth:`target`."""
        engine.attach(self.target())
        self._engine = engine

    def target(self) -> UpdateTarget:
        """What this optimizer trains and needs measured, as data for the engine: its groups (ε under ``"eps"``), its
        :attr:`points` and, for a preconditioning optimizer, the state key of its preconditioner."""
        return UpdateTarget(self, "eps", self.points)

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Callable[[], Tensor | float] | None = None,
        *,
        step: int | None = None,
        accumulate: bool = False,
        measurement: Measurement | None = None,
    ) -> Tensor:
        """One ZO step: ``apply(engine.measure(closure))``.

        Args:
            closure: returns the loss (a scalar) at the current weights; the engine calls it twice per direction with
                the default estimator (three times, or five, for optimizers that need L(θ) or candidates).
            step: the step index the seeds derive from (default: the engine's count of steps taken).
            accumulate: only measure this micro-batch along the step's directions; the next ``step`` without it
                averages every accumulated micro-batch with its own and updates (one k× larger batch).
            measurement: a step measured already (``engine.measure``): it is applied, and ``closure``, if any, is
                called once first, not measured (Lightning passes its hooks this way: they run once, before the
                update, with θ as the measurement left it).

        Returns:
            The mean over directions of the loss at θ. If any loss is not finite nothing is updated (on every rank
            alike, since the reduced losses are the same everywhere). ``None``, measuring nothing, for a step without
            a closure when every group's lr is 0 (what ``torch.distributed.checkpoint`` calls to initialize state).
        """
        if measurement is None:
            if self._engine is not None and self._engine.running:
                raise RuntimeError(REENTRANT_STEP)
            if closure is None and all(float(group["lr"]) == 0.0 for group in self.param_groups):
                # torch.distributed.checkpoint initializes an empty optimizer state so (lr 0, zero grads, no
                # closure) before saving a sharded checkpoint; a ZO step at lr 0 would change nothing anyway.
                return None
            if closure is None:
                raise ValueError(
                    f"{type(self).__name__}.step needs `closure`: a function that returns the loss at the current "
                    "weights."
                )
            measurement = self.engine.measure(closure, step, accumulate=accumulate, defer_restore=True)
        elif closure is not None:
            closure()
        self.apply(measurement)
        return measurement.loss

    @property
    def last_estimates(self) -> list[DirectionalEstimate]:
        last = self._engine.last if self._engine is not None else None
        return list(last.estimates) if last is not None else []

    @property
    def last_estimate(self) -> DirectionalEstimate | None:
        estimates = self.last_estimates
        return estimates[0] if estimates else None

    # ------------------------------------------------------------------------------------------------ the update

    @torch.no_grad()
    def apply(self, measurement: Measurement, stepper: Any = None) -> None:
        """Move the measurement's tensors along their estimated directions (:meth:`_update`), bringing back any
        displacement the measurement left on the way; then free what left the plan. A measurement that does not
        update (a non-finite step, an accumulated micro-batch) changes nothing.

        Args:
            measurement: from :meth:`~zolightning.engine.StepEngine.measure` (or a replay of a recorded one).
            stepper: what steps this optimizer in the caller's loop, when not the optimizer itself: Lightning's
                ``LightningOptimizer`` around it, whose ``step(measurement=...)`` runs its hooks and counts the step,
                then comes back here (default ``None``: update now).
        """
        if stepper is not None:
            stepper.step(measurement=measurement)
            return
        if not measurement.updates:
            return
        self._rounding_seed = mix_seed(measurement.seeds[0], _ROUNDING_STREAM)
        self._settling = Settlement(measurement.plan, measurement.displaced)
        try:
            with drawing_noise():
                self._update(measurement)
        finally:
            self._settling.finish()
            self._settling = None
        active = {id(entry.param) for entry in measurement.plan}
        for param, state in list(self.state.items()):
            if id(param) not in active and "master" in state:
                del state["master"]
                if not state:
                    del self.state[param]

    @abstractmethod
    def _update(self, measurement: Measurement) -> None:
        """Subclasses move the tensors, iterating over :meth:`directions` (which also brings back the measurement's
        displacement); they never evaluate the objective: what they compare was measured (:attr:`points`)."""

    def group_of(self) -> dict[int, dict[str, Any]]:
        """``id(param) → param group`` for every parameter."""
        return {id(param): group for group in self.param_groups for param in group["params"]}

    def transform_projected_gradient(self, projected_gradient: float, group: Mapping[str, Any]) -> float:
        """Maps each direction's (clipped) projected gradient before the update, with the tensor's ``group``: the
        identity by default; ZO-SGD-Sign takes its sign."""
        return projected_gradient

    def projected_gradient(
        self, entry: ActiveTensor, estimate: DirectionalEstimate, measurement: Measurement, group: Mapping[str, Any]
    ) -> float:
        """The projected gradient an update of ``entry`` moves by along ``estimate``'s z: the estimate's, for the
        tensor's ε, clipped as the measurement says, then :meth:`transform_projected_gradient`."""
        return self.transform_projected_gradient(estimate.projected_gradient(entry.eps, measurement.clip), group)

    def directions(
        self, measurement: Measurement, skip: Collection[int] = ()
    ) -> Iterator[tuple[ActiveTensor, Tensor, float]]:
        """Each planned tensor with a direction and its projected gradient, for :meth:`_update` to move along.

        One direction: ``(entry, z, g)`` with g = the estimate's projected gradient (clipped, then
        :meth:`transform_projected_gradient`); the tensor is first brought back to θ with the same z where the
        measurement left it displaced. Several directions: ``(entry, (1/q)·Σₖ gₖ·zₖ, 1.0)``, the averaged estimate,
        built one tensor at a time. ``skip``: plan indices an update has already moved itself (one direction only).
        """
        estimates = measurement.estimates
        groups = self.group_of()

        def gradient(entry: ActiveTensor, estimate: DirectionalEstimate) -> float:
            return self.projected_gradient(entry, estimate, measurement, groups[id(entry.param)])

        if len(estimates) == 1:
            (estimate,) = estimates
            for index, entry in enumerate(measurement.plan):
                if index in skip:
                    continue
                z = entry.direction_at(estimate.seed)
                if self._settling is not None:
                    self._settling.settle(index, z, estimate.seed)
                yield entry, z, gradient(entry, estimate)
            return
        for entry in measurement.plan:
            combined = torch.zeros(entry.data.shape, dtype=torch.float32, device=entry.data.device)
            for estimate in estimates:
                combined.add_(entry.direction_at(estimate.seed), alpha=gradient(entry, estimate) / len(estimates))
            yield entry, combined, 1.0

    @contextmanager
    def update_target(self, entry: ActiveTensor, group: Mapping[str, Any]) -> Iterator[Tensor]:
        """The tensor an update of ``entry`` writes to, per the group's ``low_precision`` mode.

        fp32/fp64 parameters, and ``nearest``: the parameter itself. ``stochastic``: an fp32 copy, written back with
        stochastic rounding (transient: one tensor at a time). ``master``: a persistent fp32 master copy that
        accumulates updates below the parameter's resolution, written back rounded to nearest; it is kept while the
        tensor is in the step's plan and freed when it leaves (with MeZO-BCD: the active block alone).
        """
        param = entry.data  # the local shard of a sharded parameter; its state stays keyed by the parameter
        mode = group.get("low_precision", "stochastic")
        if param.dtype in FULL_PRECISION or mode == "nearest":
            yield param
            return
        if mode == "master":
            state = self.state[entry.param]
            if "master" not in state:
                state["master"] = param.detach().float()
            yield state["master"]
            param.copy_(state["master"])
            return
        work = param.detach().float()
        yield work
        round_stochastic_(param, work, tensor_seed(self._rounding_seed, entry.key))

    # ------------------------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["zo_engine"] = self.engine.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        engine_state = state_dict.pop("zo_engine", None)
        super().load_state_dict(state_dict)
        if engine_state is not None:
            self.engine.load_state_dict(engine_state)
