"""``ZOOptimizer``: the base of zeroth-order optimizers that behave like ``torch.optim`` optimizers.

``step(closure)`` follows torch's contract for optimizers that re-evaluate the model (like ``LBFGS``): the closure
returns the loss at the current weights and is called once per evaluation, here twice, at θ + εz and θ − εz. No
gradient is ever computed or held. Subclasses implement :meth:`ZOOptimizer._update`, the move along the regenerated
direction, on top of a function in :mod:`zolightning.functional`.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from zolightning.functional.estimators import Reduce, RestoreMode, TwoPointEstimate, two_point_estimate
from zolightning.functional.noise import step_seed
from zolightning.functional.perturbation import ActiveTensor, PerturbationPlan, perturb_
from zolightning.functional.structure import TrainableTensor, dense_structure

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
        last_estimate: the :class:`TwoPointEstimate` of the latest step (``None`` before the first).
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        check_non_negative(defaults["lr"], "lr")
        check_positive(defaults["eps"], "eps", "It is the perturbation scale ε; MeZO uses 1e-3 for full fine-tuning.")
        check_non_negative(defaults.get("weight_decay", 0.0), "weight_decay")
        super().__init__(params, defaults)
        self._restored: set[int] = set()
        self.zo_steps = 0
        self.last_estimate: TwoPointEstimate | None = None

    def dense_plan(self) -> list[ActiveTensor]:
        """The MeZO plan: every trainable tensor, dense Gaussian noise, each group's ε."""
        return dense_structure().plan(trainable_tensors(self.param_groups), self.zo_steps)

    def group_of(self) -> dict[int, dict[str, Any]]:
        """``id(param) → param group`` for every parameter."""
        return {id(param): group for group in self.param_groups for param in group["params"]}

    @torch.no_grad()
    def step(
        self,
        closure: Callable[[], Tensor | float] | None = None,
        *,
        seed: int | None = None,
        plan: PerturbationPlan | None = None,
        reduce: Reduce | None = None,
        restore: RestoreMode = "auto",
    ) -> Tensor:
        """One ZO step: estimate along a seeded direction, then update along the same direction.

        Args:
            closure: returns the loss (a scalar) at the current weights; called twice.
            seed: the step seed; by default derived from ``defaults["seed"]`` and this optimizer's step count.
            plan: the tensors to perturb and how (default: every trainable tensor, dense Gaussian).
            reduce: applied to the stacked losses ``[L+, L−]`` before the update, e.g. a mean over ranks.
            restore: how θ is restored after the two forwards (see :func:`two_point_estimate`).

        Returns:
            (L+ + L−)/2, the loss at θ up to O(ε²). A step whose losses are not finite updates nothing.
        """
        if closure is None:
            raise ValueError(
                f"{type(self).__name__}.step needs `closure`: a function that returns the loss at the current weights."
            )
        if seed is None:
            seed = step_seed(self.defaults.get("seed", 0), self.zo_steps)
        if plan is None:
            plan = self.dense_plan()
        estimate = two_point_estimate(closure, plan, seed, restore=restore, reduce=reduce, defer_restore=True)
        self.last_estimate = estimate
        self._restored: set[int] = set()
        try:
            if estimate.is_finite:
                self._update(plan, estimate)
        finally:
            self._finish_restore(plan, estimate)
        self.zo_steps += 1
        return estimate.loss

    def directions(self, plan: PerturbationPlan, estimate: TwoPointEstimate) -> Iterator[tuple[ActiveTensor, Tensor]]:
        """Each planned tensor with its z at ``estimate.seed``, for :meth:`_update` to move along.

        When the estimate left a restore pending, the tensor is restored here first, so that restore and update share
        one noise draw (three passes of noise per step instead of MeZO's four).
        """
        for entry in plan:
            z = entry.direction_at(estimate.seed)
            if estimate.pending_offset and id(entry) not in self._restored:
                entry.param.add_(z.to(entry.param.dtype), alpha=-estimate.pending_offset * entry.eps)
                self._restored.add(id(entry))
            yield entry, z

    def _finish_restore(self, plan: PerturbationPlan, estimate: TwoPointEstimate) -> None:
        """Restore every tensor the update did not reach (a skipped step, or an update that raised)."""
        if estimate.pending_offset:
            rest = [entry for entry in plan if id(entry) not in self._restored]
            perturb_(rest, estimate.seed, -estimate.pending_offset)
        torch.clear_autocast_cache()

    @abstractmethod
    def _update(self, plan: PerturbationPlan, estimate: TwoPointEstimate) -> None:
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
