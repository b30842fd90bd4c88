"""``ZOOptimizer``: the base of zeroth-order optimizers that behave like ``torch.optim`` optimizers.

``step(closure)`` follows torch's contract for optimizers that re-evaluate the model (like ``LBFGS``): the closure
returns the loss at the current weights and is called once per evaluation, here twice, at θ + εz and θ − εz. No
gradient is ever computed or held. Subclasses implement :meth:`ZOOptimizer._update`, the move along the regenerated
direction, on top of a function in :mod:`zolightning.functional`.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from zolightning.functional.estimators import Reduce, RestoreMode, TwoPointEstimate, two_point_estimate
from zolightning.functional.noise import step_seed
from zolightning.functional.perturbation import ActiveTensor, PerturbationPlan, perturb_
from zolightning.functional.structure import TrainableTensor, dense_structure

Gather = Callable[[Sequence[TwoPointEstimate]], Sequence[TwoPointEstimate]]
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
        check_non_negative(defaults["lr"], "lr")
        check_positive(defaults["eps"], "eps", "It is the perturbation scale ε; MeZO uses 1e-3 for full fine-tuning.")
        check_non_negative(defaults.get("weight_decay", 0.0), "weight_decay")
        super().__init__(params, defaults)
        self._restored: set[int] = set()
        self.zo_steps = 0
        self.last_estimate: TwoPointEstimate | None = None
        self.last_estimates: list[TwoPointEstimate] = []

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
        seed: int | Sequence[int] | None = None,
        plan: PerturbationPlan | None = None,
        reduce: Reduce | None = None,
        restore: RestoreMode = "auto",
        gather: Gather | None = None,
    ) -> Tensor:
        """One ZO step: estimate along seeded directions, then update along the same directions.

        Args:
            closure: returns the loss (a scalar) at the current weights; called twice per direction.
            seed: the step seed, or one seed per direction (q seeds: n-SPSA, the estimates averaged). By default one
                direction seeded from ``defaults["seed"]`` and this optimizer's step count.
            plan: the tensors to perturb and how (default: every trainable tensor, dense Gaussian).
            reduce: applied to each direction's stacked losses ``[L+, L−]``, e.g. a mean over data-parallel ranks.
            restore: how θ is restored after the two forwards (see :func:`two_point_estimate`).
            gather: maps this process's estimates to everyone's, in the same order on every process (query-parallel
                data parallelism: each rank estimates its own directions and all ranks apply all of them).

        Returns:
            The mean over directions of (L+ + L−)/2, the loss at θ up to O(ε²). If any loss is not finite, nothing is
            updated (on every rank alike, since the gathered losses are the same everywhere).
        """
        if closure is None:
            raise ValueError(
                f"{type(self).__name__}.step needs `closure`: a function that returns the loss at the current weights."
            )
        if seed is None:
            seed = step_seed(self.defaults.get("seed", 0), self.zo_steps)
        seeds = [seed] if isinstance(seed, int) else list(seed)
        if not seeds:
            raise ValueError("`seed` must name at least one direction.")
        if plan is None:
            plan = self.dense_plan()
        # With one direction the restore is fused into the update; with several, each estimate restores at once.
        fused = len(seeds) == 1 and gather is None
        estimates = [
            two_point_estimate(closure, plan, s, restore=restore, reduce=reduce, defer_restore=fused) for s in seeds
        ]
        pending = estimates[0]
        if gather is not None:
            estimates = list(gather(estimates))
        self.last_estimates = estimates
        self.last_estimate = estimates[0]
        self._restored = set()
        try:
            if all(estimate.is_finite for estimate in estimates):
                self._update(plan, estimates)
        finally:
            self._finish_restore(plan, pending)
        self.zo_steps += 1
        return torch.stack([estimate.loss for estimate in estimates]).mean()

    def directions(
        self, plan: PerturbationPlan, estimates: Sequence[TwoPointEstimate]
    ) -> Iterator[tuple[ActiveTensor, Tensor, float]]:
        """Each planned tensor with a direction and its projected gradient, for :meth:`_update` to move along.

        One direction: ``(entry, z, g)`` with g = (L+ − L−)/2ε. When the estimate left a restore pending, the tensor is
        restored here first, so that restore and update share one noise draw (three passes of noise per step instead
        of MeZO's four). Several directions: ``(entry, (1/q)·Σₖ gₖ·zₖ, 1.0)``, the averaged estimate, built one tensor
        at a time.
        """
        half_differences = [float(estimate.half_difference) for estimate in estimates]
        for entry in plan:
            if len(estimates) == 1:
                (estimate,) = estimates
                z = entry.direction_at(estimate.seed)
                if estimate.pending_offset and id(entry) not in self._restored:
                    entry.param.add_(z.to(entry.param.dtype), alpha=-estimate.pending_offset * entry.eps)
                    self._restored.add(id(entry))
                yield entry, z, half_differences[0] / entry.eps
                continue
            combined = torch.zeros(entry.param.shape, dtype=torch.float32, device=entry.param.device)
            for estimate, half_difference in zip(estimates, half_differences):
                combined.add_(entry.direction_at(estimate.seed), alpha=half_difference / entry.eps / len(estimates))
            yield entry, combined, 1.0

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
