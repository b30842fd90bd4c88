"""``ZOOptimizer``: the base of zeroth-order optimizers that behave like ``torch.optim`` optimizers.

Each optimizer is the update stage of a :class:`~zolightning.engine.StepEngine`: it holds param groups (lr, ε,
weight decay, its own options) and state, and :meth:`ZOOptimizer.update` moves the plan's tensors along the
estimated directions, on top of a function in :mod:`zolightning.functional`. ``step(closure)`` follows torch's
contract for optimizers that re-evaluate the model (like ``LBFGS``): the closure returns the loss at the current
weights and the optimizer's engine calls it once per evaluation. No gradient is ever computed or held.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from zolightning.config import ZOConfig
from zolightning.engine.step import REENTRANT_STEP, StepEngine
from zolightning.estimators.probe import UpdateContext
from zolightning.functional.checks import check_non_negative, check_positive
from zolightning.functional.estimate import DirectionalEstimate
from zolightning.functional.noise import mix_seed, tensor_seed
from zolightning.functional.perturbation import ActiveTensor, PerturbationPlan, iter_directions
from zolightning.functional.rounding import FULL_PRECISION, check_low_precision_update, round_stochastic_
from zolightning.structures.base import TrainableTensor, trainable_tensors

_ROUNDING_STREAM = 0x5352  # separates stochastic-rounding noise from the directions' noise
ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


class ZOOptimizer(Optimizer, metaclass=ABCMeta):
    """Base class: the update stage of the ZO step, with the ``torch.optim`` interface.

    Every group carries ``lr`` (step size), ``eps`` (perturbation scale ε, in parameter units) and
    ``weight_decay``. ``seed`` seeds the directions in a plain loop; under a :class:`~zolightning.ZOLightningModule`
    ``zo.seed`` does, and setting both to different values is an error.

    Attributes:
        engine: the :class:`~zolightning.engine.StepEngine` whose update stage this is (made on first use with
            default settings; a ZOLightningModule gives its own). Install structures on it in a plain loop:
            ``optimizer.engine.install(BlockSelection(), module=model)``.
        last_estimate / last_estimates: the latest step's first / every direction's estimate.
    """

    # Whether the optimizer needs L(θ) besides L(θ ± εz) (HiZOO's curvature, ZO-SGD-Cons's comparison).
    needs_center: bool = False
    # Whether the optimizer supports several directions per step (or a gathered set of them).
    supports_many_directions: bool = True
    # Why a trajectory log (seeds and the measured numbers) cannot replay this optimizer's steps; None: it can, since
    # its update and state are functions of the plan and those numbers (zolightning.trajectory).
    not_replayable: str | None = None

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        check_low_precision_update(defaults.setdefault("low_precision", "stochastic"))
        check_non_negative(defaults["lr"], "lr")
        check_positive(defaults["eps"], "eps", "It is the perturbation scale ε; MeZO uses 1e-3 for full fine-tuning.")
        check_non_negative(defaults.get("weight_decay", 0.0), "weight_decay")
        seed = defaults.pop("seed", None)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an integer or None, got {seed!r}.")
        super().__init__(params, defaults)
        self.seed: int | None = seed
        self._engine: StepEngine | None = None
        self._rounding_seed = 0

    # ------------------------------------------------------------------------------------------------ the step

    @property
    def engine(self) -> StepEngine:
        if self._engine is None:
            self.use_engine(StepEngine(ZOConfig(seed=self.seed or 0)))
        assert self._engine is not None
        return self._engine

    def use_engine(self, engine: StepEngine) -> None:
        """Make this optimizer the update stage of ``engine`` (a module's, say) and step through it."""
        if self.seed is not None and self.seed != engine.config.seed:
            raise ValueError(
                f"{type(self).__name__}(seed={self.seed}) and `zo.seed: {engine.config.seed}` both seed the step. "
                "Keep one: drop the optimizer's `seed` (zo.seed is the seed under a ZOLightningModule)."
            )
        engine.bind(self)
        self._engine = engine

    @torch.no_grad()
    def step(  # type: ignore[override]
        self, closure: Callable[[], Tensor | float] | None = None, *, step: int | None = None, accumulate: bool = False
    ) -> Tensor:
        """One ZO step: estimate along seeded directions, then update along the same directions.

        Args:
            closure: returns the loss (a scalar) at the current weights; called twice per direction with the default
                estimator (three times for optimizers that need L(θ)).
            step: the step index the seeds derive from (default: the engine's count of steps taken).
            accumulate: only measure this micro-batch along the step's directions; the next ``step`` without it
                averages every accumulated micro-batch with its own and updates (one k× larger batch).

        Returns:
            The mean over directions of the loss at θ. If any loss is not finite nothing is updated (on every rank
            alike, since the reduced losses are the same everywhere).
        """
        if self._engine is not None and self._engine.running:
            raise RuntimeError(REENTRANT_STEP)
        if closure is None:
            raise ValueError(
                f"{type(self).__name__}.step needs `closure`: a function that returns the loss at the current weights."
            )
        return self.engine.step(closure, step=step, update=not accumulate)

    @property
    def last_estimates(self) -> list[DirectionalEstimate]:
        last = self._engine.last if self._engine is not None else None
        return list(last.estimates) if last is not None else []

    @property
    def last_estimate(self) -> DirectionalEstimate | None:
        estimates = self.last_estimates
        return estimates[0] if estimates else None

    # ------------------------------------------------------------------------------------------------ update stage

    def tensors(self, names: Mapping[int, str] | None, eps_factor: float) -> list[TrainableTensor]:
        """The trainable tensors with each group's ε times ``eps_factor`` (the ε schedule)."""
        for group in self.param_groups:
            # As torch's LR schedulers keep ``initial_lr``, the group keeps its initial ε (and checkpoints it).
            group["eps"] = group.setdefault("initial_eps", group["eps"]) * eps_factor
        return trainable_tensors(self.param_groups, names)

    def prepare_plan(self, plan: PerturbationPlan) -> PerturbationPlan:
        """The plan the step perturbs and updates along; a preconditioning optimizer (HiZOO) rescales the
        directions here. The identity by default."""
        return plan

    def update(self, plan: PerturbationPlan, estimates: Sequence[DirectionalEstimate], context: UpdateContext) -> None:
        """Move the plan's tensors along their estimated directions (:meth:`_update`), then free what left the plan."""
        self._rounding_seed = mix_seed(estimates[0].seed, _ROUNDING_STREAM)
        self._update(plan, estimates, context)
        active = {id(entry.param) for entry in plan}
        for param, state in list(self.state.items()):
            if id(param) not in active and "master" in state:
                del state["master"]
                if not state:
                    del self.state[param]

    @abstractmethod
    def _update(self, plan: PerturbationPlan, estimates: Sequence[DirectionalEstimate], context: UpdateContext) -> None:
        """Subclasses move the tensors, iterating over :meth:`directions` (which also completes a fused restore)."""

    def group_of(self) -> dict[int, dict[str, Any]]:
        """``id(param) → param group`` for every parameter."""
        return {id(param): group for group in self.param_groups for param in group["params"]}

    def transform_projected_gradient(self, projected_gradient: float) -> float:
        """Maps each direction's (clipped) projected gradient before the update: the identity by default; ZO-SGD-Sign
        takes its sign."""
        return projected_gradient

    def directions(
        self, plan: PerturbationPlan, estimates: Sequence[DirectionalEstimate], context: UpdateContext
    ) -> Iterator[tuple[ActiveTensor, Tensor, float]]:
        """Each planned tensor with a direction and its projected gradient, for :meth:`_update` to move along.

        One direction: ``(entry, z, g)`` with g = the estimate's projected gradient (clipped, then
        :meth:`transform_projected_gradient`); the tensor is first brought back to θ with the same z when the engine
        fused the restore into the update. Several directions: ``(entry, (1/q)·Σₖ gₖ·zₖ, 1.0)``, the averaged
        estimate, built one tensor at a time.
        """

        def gradient(entry: ActiveTensor, estimate: DirectionalEstimate) -> float:
            return self.transform_projected_gradient(estimate.projected_gradient(entry.eps, context.clip))

        if len(estimates) == 1:
            (estimate,) = estimates
            for entry, z in iter_directions(plan, estimate.seed):
                context.probe.settle(entry, z, estimate.seed)
                yield entry, z, gradient(entry, estimate)
            return
        for entry in plan:
            combined = torch.zeros(entry.param.shape, dtype=torch.float32, device=entry.param.device)
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
        param = entry.param
        mode = group.get("low_precision", "stochastic")
        if param.dtype in FULL_PRECISION or mode == "nearest":
            yield param
            return
        if mode == "master":
            state = self.state[param]
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
