"""Perturbation structures: which tensors a step perturbs, and how z is formed on each.

A :class:`PerturbationStructure` holds two rules:

- a :class:`TensorSelection` picks the step's active tensors (all of them for MeZO, one block for MeZO-BCD, a random
  subset of layers for LeZO);
- a :class:`DirectionRule` gives each active tensor its :class:`~zolightning.functional.directions.TensorDirection`
  (dense for MeZO, masked for Sparse-MeZO, low-rank for LOZO and SubZero).

Both are :class:`StructureRule` objects: they decide per step from the step counter, may keep state (masks, factors),
and save that state by parameter name through ``state_dict`` / ``load_state_dict``. Selection and direction compose:
a sparse mask inside the active block is a block selection with a masked rule. The plan a structure returns is used
for the whole step, perturbation and update alike, so the update always moves along the very direction that was
estimated. Adding a structure is one file (a rule) and a line in :mod:`zolightning.structures.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from zolightning.functional.directions import DenseDirection, TensorDirection
from zolightning.functional.noise import Distribution, stable_key, unwrapped_name
from zolightning.functional.perturbation import ActiveTensor

Part = Literal["selection", "directions"]


@dataclass(frozen=True, eq=False)
class TrainableTensor:
    """A tensor the optimizer may update: its name, the parameter and its perturbation scale ε."""

    name: str
    param: Tensor
    eps: float


def trainable_tensors(
    param_groups: Iterable[Mapping[str, Any]],
    names: Mapping[int, str] | None = None,
    eps_of: Callable[[Mapping[str, Any]], float] = lambda group: float(group["eps"]),
) -> list[TrainableTensor]:
    """The tensors with ``requires_grad=True`` of an optimizer's param groups, in group order.

    Names come from ``names`` (``id(param) → name``, e.g. from ``module.named_parameters()``), else from the group's
    ``param_names`` (optimizers built from named parameters), else ``"group{g}.param{p}"``. ε is ``eps_of(group)``.
    """
    tensors = []
    for group_index, group in enumerate(param_groups):
        group_names = group.get("param_names")
        eps = eps_of(group)
        for param_index, param in enumerate(group["params"]):
            if not param.requires_grad:
                continue
            name = names.get(id(param)) if names is not None else None
            if name is None and group_names is not None:
                name = group_names[param_index]
            if name is None:
                name = f"group{group_index}.param{param_index}"
            tensors.append(TrainableTensor(name, param, eps))
    return tensors


@lru_cache(maxsize=65536)
def tensor_key(name: str) -> int:
    """The noise key of a parameter name, wrappers' attributes left out (cached: the same names come back every
    step)."""
    return stable_key(unwrapped_name(name))


class StructureRule(ABC):
    """A stateful rule of the perturbation structure, installed as its :attr:`part`.

    The state protocol: :meth:`state_dict` returns only numbers, strings, lists, dicts and CPU tensors, keyed by
    parameter name (so it loads with ``weights_only=True``); :meth:`load_state_dict` puts tensors back on the devices
    of their parameters. A rule without state keeps the defaults.

    Seed and noise: ``zo.seed`` and ``zo.distribution`` own them. A rule that draws takes ``seed`` / ``distribution``
    arguments only as explicit overrides (``None``, the default: the step's); :meth:`bind` hands it the step's, and
    :meth:`seed_in_use` / :meth:`distribution_in_use` say which applies. The rule never copies the step's values into
    its own arguments, so :meth:`config` gives back exactly what it was built with.
    """

    part: ClassVar[Part]
    # The explicit overrides (subclasses that take them set them in __init__), and what `bind` handed over.
    seed: int | None = None
    distribution: Distribution | None = None
    _zo_seed: int = 0
    _zo_distribution: Distribution = "gaussian"

    def bind(self, module: nn.Module | None, seed: int, distribution: Distribution) -> None:
        """Called once when the rule is installed: ``module`` is the model (``None`` when the engine has none),
        ``seed`` and ``distribution`` the step's (``zo.seed``, ``zo.distribution``), used where the rule has no
        override. Subclasses that need the module override this and call ``super().bind`` first."""
        self._zo_seed = seed
        self._zo_distribution = distribution

    def seed_in_use(self) -> int:
        """The rule's own ``seed`` if it was given one, else ``zo.seed`` (0 before :meth:`bind`)."""
        return self.seed if self.seed is not None else self._zo_seed

    def distribution_in_use(self) -> Distribution:
        """The rule's own ``distribution`` if it was given one, else ``zo.distribution`` (Gaussian before
        :meth:`bind`)."""
        return self.distribution if self.distribution is not None else self._zo_distribution

    def config(self) -> dict[str, Any]:
        """The rule's ``__init__`` arguments as it was built (overrides left ``None`` stay ``None``; nested rules as
        rules): with the registry name and :meth:`state_dict`, what a trajectory replay rebuilds it from
        (:mod:`zolightning.trajectory.run_spec`). Every registered rule gives it; a rule of one's own that is to be
        logged must too (the default refuses, naming the fix).

        Raises:
            NotImplementedError: the rule does not say how it was built.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not give `config()` (its __init__ arguments), which a trajectory needs to "
            "rebuild it: implement it, returning a dict of those arguments."
        )

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any], device_of: Mapping[str, torch.device] | None = None) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, but was given {sorted(state)}.")


class TensorSelection(StructureRule):
    """Picks the tensors a step perturbs.

    Class attributes:
        prefers_snapshot: restore the active tensors from a copy even in fp32 (``zo.restore: auto``): worth it when the
            active set is small, as with one block.
    """

    part = "selection"
    prefers_snapshot: ClassVar[bool] = False

    @abstractmethod
    def select(self, tensors: Sequence[TrainableTensor], step: int) -> list[TrainableTensor]:
        """The active tensors at ``step``."""

    def active_index(self, step: int) -> int | None:
        """The index of the active block at ``step``, for logs (``None`` for selections without blocks)."""
        return None

    def block_sizes(self) -> list[int] | None:
        """The number of coordinates of each block the selection steps through (``None`` for selections without
        blocks); ``zo.lr_scales: by_block_size`` reads their median."""
        return None


class DirectionRule(StructureRule):
    """Gives each active tensor its direction for the step."""

    part = "directions"

    def prepare(self, tensors: Sequence[TrainableTensor], step: int) -> None:
        """Called once per step with every trainable tensor before :meth:`direction` (e.g. to refresh global
        thresholds or factors). Does nothing by default."""

    @abstractmethod
    def direction(self, tensor: TrainableTensor, step: int) -> TensorDirection:
        """The direction of ``tensor`` at ``step``; it must stay valid for the whole step."""


class AllTensors(TensorSelection):
    """Every trainable tensor: MeZO."""

    def select(self, tensors: Sequence[TrainableTensor], step: int) -> list[TrainableTensor]:
        return list(tensors)

    def config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return "AllTensors()"


class DenseDirections(DirectionRule):
    """Dense noise on every tensor: MeZO's perturbation.

    Args:
        distribution: ``gaussian`` or ``rademacher`` (default: the engine's ``zo.distribution``).
    """

    def __init__(self, distribution: Distribution | None = None) -> None:
        self.distribution = distribution
        self.dense = DenseDirection(self.distribution_in_use())

    def bind(self, module: nn.Module | None, seed: int, distribution: Distribution) -> None:
        super().bind(module, seed, distribution)
        self.dense = DenseDirection(self.distribution_in_use())

    def direction(self, tensor: TrainableTensor, step: int) -> TensorDirection:
        return self.dense

    def config(self) -> dict[str, Any]:
        return {"distribution": self.distribution}

    def __repr__(self) -> str:
        return f"DenseDirections({self.dense.distribution!r})"


class PerturbationStructure:
    """A selection and a direction rule; :meth:`plan` turns the trainable tensors into the step's plan.

    Args:
        selection: which tensors are active (default: all).
        directions: how z is formed on each (default: dense noise of ``distribution``).
        distribution: the dense default's noise (default ``None``: the one it is bound to, ``zo.distribution`` in
            an engine).
    """

    def __init__(
        self,
        selection: TensorSelection | None = None,
        directions: DirectionRule | None = None,
        distribution: Distribution | None = None,
    ) -> None:
        self.selection: TensorSelection = selection if selection is not None else AllTensors()
        self.directions: DirectionRule = directions if directions is not None else DenseDirections(distribution)
        # Which object installed each part, so that two installers cannot both set one.
        self.owners: dict[str, object] = {}

    def install(self, rule: StructureRule, owner: object | None = None) -> None:
        """Set ``rule`` as the structure's :attr:`~StructureRule.part`; refuse a part another owner already set."""
        if not isinstance(rule, StructureRule):
            raise TypeError(f"Expected a TensorSelection or DirectionRule, got {type(rule).__name__}.")
        owner = rule if owner is None else owner
        current = self.owners.get(rule.part)
        if current is not None and current is not owner:
            raise ValueError(
                f"{type(owner).__name__} and {type(current).__name__} both set the perturbation {rule.part}; they do "
                "not compose. Keep one of them (a block or layer selection composes with one sparse or low-rank rule)."
            )
        setattr(self, rule.part, rule)
        self.owners[rule.part] = owner

    def plan(self, tensors: Sequence[TrainableTensor], step: int) -> list[ActiveTensor]:
        """The step's plan: selected tensors with their directions and noise keys (learning-rate scale 1)."""
        self.directions.prepare(tensors, step)
        return [
            ActiveTensor(t.name, t.param, tensor_key(t.name), self.directions.direction(t, step), t.eps)
            for t in self.selection.select(tensors, step)
        ]

    def state_dict(self) -> dict[str, Any]:
        """The state of the parts no outside owner keeps: rules installed directly (``fabric.save``, plain loops)
        and the defaults. A part installed by a callback is saved by that callback, not twice."""
        return {
            part: getattr(self, part).state_dict()
            for part in ("selection", "directions")
            if self.owners.get(part, getattr(self, part)) is getattr(self, part)
        }

    def load_state_dict(self, state: Mapping[str, Any], device_of: Mapping[str, torch.device] | None = None) -> None:
        """Load what :meth:`state_dict` saved; parts it did not save are left as they are."""
        for part, part_state in state.items():
            getattr(self, part).load_state_dict(part_state, device_of)

    def __repr__(self) -> str:
        return f"PerturbationStructure(selection={self.selection!r}, directions={self.directions!r})"
