"""``ZOOptimizer``: the base of zeroth-order optimizers that behave like ``torch.optim`` optimizers.

``step(closure)`` follows torch's contract for optimizers that re-evaluate the model (like ``LBFGS``): the closure
returns the loss at the current weights and is called once per evaluation, here twice, at θ + εz and θ − εz. No
gradient is ever computed or held. Subclasses implement :meth:`ZOOptimizer._update`, the move along the regenerated
direction, on top of a function in :mod:`zolightning.functional`.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from zolightning.functional.estimators import (
    Reduce,
    RestoreMode,
    TwoPointEstimate,
    average_estimates,
    two_point_estimate,
)
from zolightning.functional.noise import mix_seed, step_seed, tensor_seed
from zolightning.functional.perturbation import ActiveTensor, PerturbationPlan, iter_directions, perturb_
from zolightning.functional.rounding import FULL_PRECISION, check_low_precision_update, round_stochastic_
from zolightning.functional.structure import TrainableTensor, dense_structure

Gather = Callable[[Sequence[TwoPointEstimate]], Sequence[TwoPointEstimate]]
# (plan, seed) → estimate: replaces the two-point estimate (e.g. the forward gradient).
EstimateFn = Callable[[PerturbationPlan, int], TwoPointEstimate]
_ROUNDING_STREAM = 0x5352  # separates stochastic-rounding noise from the directions' noise
ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


def check_non_negative(value: float, argument: str) -> None:
    if not value >= 0.0:
        raise ValueError(f"`{argument}` must be >= 0, got {value}.")


def check_positive(value: float, argument: str, fix: str = "") -> None:
    if not value > 0.0:
        raise ValueError(f"`{argument}` must be > 0, got {value}.{(' ' + fix) if fix else ''}")


def trainable_tensors(
    param_groups: Iterable[Mapping[str, Any]],
    names: Mapping[int, str] | None = None,
    eps: float | None = None,
) -> list[TrainableTensor]:
    """The tensors with ``requires_grad=True`` of an optimizer's param groups, in group order.

    Names come from ``names`` (``id(param) → name``, e.g. from ``module.named_parameters()``), else from the group's
    ``param_names`` (optimizers built from named parameters), else ``"group{g}.param{p}"``. ε comes from ``eps`` when
    given (plain torch optimizers, whose ``eps`` means something else), else from the group's ``"eps"``.
    """
    tensors = []
    for group_index, group in enumerate(param_groups):
        group_names = group.get("param_names")
        for param_index, param in enumerate(group["params"]):
            if not param.requires_grad:
                continue
            name = None
            if names is not None:
                name = names.get(id(param))
            if name is None and group_names is not None:
                name = group_names[param_index]
            if name is None:
                name = f"group{group_index}.param{param_index}"
            tensors.append(TrainableTensor(name, param, float(group["eps"] if eps is None else eps)))
    return tensors


class ZOOptimizer(Optimizer, metaclass=ABCMeta):
    """Base class: two-point estimate in :meth:`step`, update in :meth:`_update`.

    Every group carries ``lr`` (step size), ``eps`` (perturbation scale ε, in parameter units) and
    ``weight_decay``. ``seed`` seeds the directions when :meth:`step` is not given one (plain PyTorch use); a
    :class:`~zolightning.ZOLightningModule` always passes the step seed, derived from its own seed and
    ``trainer.global_step``.

    Attributes:
        last_estimate: the first :class:`TwoPointEstimate` of the latest step (``None`` before the first).
        last_estimates: every direction's estimate of the latest step (all ranks' under ``gather``).
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        check_low_precision_update(defaults.setdefault("low_precision", "nearest"))
        check_non_negative(defaults["lr"], "lr")
        check_positive(defaults["eps"], "eps", "It is the perturbation scale ε; MeZO uses 1e-3 for full fine-tuning.")
        check_non_negative(defaults.get("weight_decay", 0.0), "weight_decay")
        super().__init__(params, defaults)
        self._restored: set[int] = set()
        self.zo_steps = 0
        self.last_estimate: TwoPointEstimate | None = None
        self.last_estimates: list[TwoPointEstimate] = []
        self._clip: float | None = None
        self._closure: Callable[[], Tensor | float] | None = None
        self._reduce: Reduce | None = None
        self._restore: RestoreMode = "auto"
        self._rounding_seed = 0

    def dense_plan(self) -> list[ActiveTensor]:
        """The MeZO plan: every trainable tensor, dense Gaussian noise, each group's ε."""
        return dense_structure().plan(trainable_tensors(self.param_groups), self.zo_steps)

    def group_of(self) -> dict[int, dict[str, Any]]:
        """``id(param) → param group`` for every parameter."""
        return {id(param): group for group in self.param_groups for param in group["params"]}

    # Whether the optimizer needs L(θ) besides L(θ ± εz) (HiZOO's curvature, ZO-SGD-Cons's comparison).
    needs_center: bool = False
    # Whether the optimizer supports several directions per step (or a gathered set of them).
    supports_many_directions: bool = True

    def prepare_plan(self, plan: PerturbationPlan) -> PerturbationPlan:
        """The plan the step perturbs and updates along; a preconditioning optimizer (HiZOO) rescales the
        directions here. The identity by default."""
        return plan

    @torch.no_grad()
    def estimate(
        self,
        closure: Callable[[], Tensor | float],
        *,
        seed: int | Sequence[int] | None = None,
        plan: PerturbationPlan | None = None,
        reduce: Reduce | None = None,
        restore: RestoreMode = "auto",
        one_sided: bool = False,
        estimate_fn: EstimateFn | None = None,
    ) -> list[TwoPointEstimate]:
        """The estimates of one micro-batch along the step's directions, θ restored and nothing updated.

        Gradient accumulation: call this on micro-batches 1 … k−1 with the same seed(s) and plan, then :meth:`step`
        on micro-batch k with ``accumulated=[those lists]``; the step averages every direction's losses over the k
        micro-batches, which equals one estimate on a k× larger batch. Arguments are as for :meth:`step`.
        """
        seeds = self._seeds(seed)
        plan = self.prepare_plan(self.dense_plan() if plan is None else plan)
        return self._estimate(closure, seeds, plan, reduce, restore, one_sided, estimate_fn, fused=False)

    @torch.no_grad()
    def step(
        self,
        closure: Callable[[], Tensor | float] | None = None,
        *,
        seed: int | Sequence[int] | None = None,
        plan: PerturbationPlan | None = None,
        reduce: Reduce | None = None,
        restore: RestoreMode = "auto",
        gather: Gather | None = None,
        one_sided: bool = False,
        clip: float | None = None,
        estimate_fn: EstimateFn | None = None,
        accumulated: Sequence[Sequence[TwoPointEstimate]] = (),
    ) -> Tensor:
        """One ZO step: estimate along seeded directions, then update along the same directions.

        Args:
            closure: returns the loss (a scalar) at the current weights; called twice per direction (three times for
                optimizers that need L(θ)). May be ``None`` only to apply ``accumulated`` estimates alone.
            seed: the step seed, or one seed per direction (q seeds: n-SPSA, the estimates averaged). By default one
                direction seeded from ``defaults["seed"]`` and this optimizer's step count.
            plan: the tensors to perturb and how (default: every trainable tensor, dense Gaussian).
            reduce: applied to each direction's stacked losses, e.g. a mean over data-parallel ranks.
            restore: how θ is restored after the forwards (see :func:`two_point_estimate`).
            gather: maps this process's estimates to everyone's, in the same order on every process (query-parallel
                data parallelism: each rank estimates its own directions and all ranks apply all of them).
            one_sided: estimate from L(θ + εz) − L(θ) instead of L(θ ± εz).
            clip: clip each direction's projected gradient g to [−clip, clip] before the update.
            estimate_fn: ``(plan, seed) → TwoPointEstimate`` replacing the two-point estimate, e.g. the forward
                gradient (:func:`~zolightning.functional.forward_gradient_estimate`); ``closure`` is then unused.
            accumulated: earlier micro-batches' estimates of the same seeds (from :meth:`estimate`), averaged with
                this one's.

        Returns:
            The mean over directions of the loss at θ (L0 when evaluated, else (L+ + L−)/2). If any loss is not finite,
            nothing is updated (on every rank alike, since the gathered losses are the same everywhere).
        """
        if closure is None and not accumulated:
            raise ValueError(
                f"{type(self).__name__}.step needs `closure`: a function that returns the loss at the current weights."
            )
        seeds = self._seeds(seed)
        if not self.supports_many_directions and (len(seeds) > 1 or gather is not None):
            raise ValueError(
                f"{type(self).__name__} takes one direction per step; set `num_directions=1` and `query_parallel=False`."
            )
        plan = self.prepare_plan(self.dense_plan() if plan is None else plan)
        # With one direction the restore is fused into the update; with several, each estimate restores at once.
        fused = len(seeds) == 1 and gather is None
        estimates = (
            self._estimate(closure, seeds, plan, reduce, restore, one_sided, estimate_fn, fused)
            if closure is not None or estimate_fn is not None
            else []
        )
        if accumulated:
            rounds = [*accumulated, estimates] if estimates else list(accumulated)
            if any(len(round_) != len(seeds) for round_ in rounds):
                raise ValueError("Every accumulated micro-batch must hold one estimate per seed of the step.")
            estimates = [average_estimates([round_[k] for round_ in rounds]) for k in range(len(seeds))]
        pending = estimates[0]
        if gather is not None:
            estimates = list(gather(estimates))
        self.last_estimates = estimates
        self.last_estimate = estimates[0]
        self._restored = set()
        self._clip = clip
        self._closure = closure
        self._reduce = reduce
        self._restore = restore
        try:
            if all(estimate.is_finite for estimate in estimates):
                self._rounding_seed = mix_seed(estimates[0].seed, _ROUNDING_STREAM)
                self._update(plan, estimates)
                self._free_inactive_masters(plan)
        finally:
            self._closure = self._reduce = None
            self._finish_restore(plan, pending)
        self.zo_steps += 1
        return torch.stack([estimate.loss for estimate in estimates]).mean()

    def _seeds(self, seed: int | Sequence[int] | None) -> list[int]:
        if seed is None:
            seed = step_seed(self.defaults.get("seed", 0), self.zo_steps)
        seeds = [seed] if isinstance(seed, int) else list(seed)
        if not seeds:
            raise ValueError("`seed` must name at least one direction.")
        return seeds

    def _estimate(
        self,
        closure: Callable[[], Tensor | float] | None,
        seeds: Sequence[int],
        plan: PerturbationPlan,
        reduce: Reduce | None,
        restore: RestoreMode,
        one_sided: bool,
        estimate_fn: EstimateFn | None,
        fused: bool,
    ) -> list[TwoPointEstimate]:
        if estimate_fn is not None:
            return [estimate_fn(plan, s) for s in seeds]
        if self.needs_center and one_sided:
            raise ValueError(f"{type(self).__name__} needs a two-sided estimate; set `one_sided=False`.")
        assert closure is not None
        return [
            two_point_estimate(
                closure, plan, s, one_sided=one_sided, center=self.needs_center, restore=restore, reduce=reduce,
                defer_restore=fused,
            )
            for s in seeds
        ]

    def transform_projected_gradient(self, projected_gradient: float) -> float:
        """Maps each direction's (clipped) projected gradient before the update: the identity by default; ZO-SGD-Sign
        takes its sign."""
        return projected_gradient

    def directions(
        self, plan: PerturbationPlan, estimates: Sequence[TwoPointEstimate]
    ) -> Iterator[tuple[ActiveTensor, Tensor, float]]:
        """Each planned tensor with a direction and its projected gradient, for :meth:`_update` to move along.

        One direction: ``(entry, z, g)`` with g = ``difference``/ε (clipped, then
        :meth:`transform_projected_gradient`). When the estimate left a restore pending, the tensor is restored here
        first, so that restore and update share one noise draw (three passes of noise per step instead of MeZO's
        four). Several directions: ``(entry, (1/q)·Σₖ gₖ·zₖ, 1.0)``, the averaged estimate, built one tensor at a time.
        """
        gradient = lambda entry, estimate: self.transform_projected_gradient(  # noqa: E731
            estimate.projected_gradient(entry.eps, self._clip)
        )
        if len(estimates) == 1:
            (estimate,) = estimates
            for entry, z in iter_directions(plan, estimate.seed):
                if estimate.pending_offset and id(entry) not in self._restored:
                    entry.param.add_(z.to(entry.param.dtype), alpha=-estimate.pending_offset * entry.eps)
                    self._restored.add(id(entry))
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
        mode = group.get("low_precision", "nearest")
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

    def _free_inactive_masters(self, plan: PerturbationPlan) -> None:
        active = {id(entry.param) for entry in plan}
        for param, state in list(self.state.items()):
            if id(param) not in active and "master" in state:
                del state["master"]
                if not state:
                    del self.state[param]

    def _finish_restore(self, plan: PerturbationPlan, estimate: TwoPointEstimate) -> None:
        """Restore every tensor the update did not reach (a skipped step, or an update that raised)."""
        if estimate.pending_offset:
            rest = [entry for entry in plan if id(entry) not in self._restored]
            perturb_(rest, estimate.seed, -estimate.pending_offset)
        torch.clear_autocast_cache()

    @abstractmethod
    def _update(self, plan: PerturbationPlan, estimates: Sequence[TwoPointEstimate]) -> None:
        """Move the plan's tensors along their directions; subclasses define how, iterating over
        :meth:`directions` (which also completes any pending restore)."""

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["zo_steps"] = self.zo_steps
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.zo_steps = int(state_dict.pop("zo_steps", 0))
        super().load_state_dict(state_dict)
