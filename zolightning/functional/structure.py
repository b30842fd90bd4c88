"""Perturbation structures: which tensors a step perturbs, and how z is formed on each.

A :class:`PerturbationStructure` is two small parts:

- a :class:`TensorSelection` picks the step's active tensors and their learning-rate scales (all tensors for MeZO,
  one block for MeZO-BCD);
- a :class:`DirectionRule` gives each active tensor its :class:`TensorDirection` (dense for MeZO, masked for
  Sparse-MeZO, low-rank for LOZO and SubZero).

Both decide per step from the step counter and may keep state (masks, factors); the callbacks that install them
checkpoint that state. Selection and direction compose: a sparse mask inside the active block is a block selection with
a masked rule. The plan a structure returns is used for the whole step, perturbation and update alike, so the update
always moves along the very direction that was estimated.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from zolightning.functional.directions import DenseDirection, TensorDirection
from zolightning.functional.estimators import RestoreMode
from zolightning.functional.noise import Distribution, stable_key
from zolightning.functional.perturbation import ActiveTensor


@dataclass(frozen=True, eq=False)
class TrainableTensor:
    """A tensor the optimizer may update: its name, the parameter and its perturbation scale ε."""

    name: str
    param: Tensor
    eps: float


@lru_cache(maxsize=65536)
def tensor_key(name: str) -> int:
    """The noise key of a parameter name (cached: the same names come back every step)."""
    return stable_key(name)


class TensorSelection(ABC):
    """Picks the tensors a step perturbs."""

    @abstractmethod
    def select(self, tensors: Sequence[TrainableTensor], step: int) -> list[tuple[TrainableTensor, float]]:
        """The active tensors at ``step`` with their learning-rate scales."""


class AllTensors(TensorSelection):
    """Every trainable tensor, learning-rate scale 1: MeZO."""

    def select(self, tensors: Sequence[TrainableTensor], step: int) -> list[tuple[TrainableTensor, float]]:
        return [(tensor, 1.0) for tensor in tensors]

    def __repr__(self) -> str:
        return "AllTensors()"


class DirectionRule(ABC):
    """Gives each active tensor its direction for the step."""

    def prepare(self, tensors: Sequence[TrainableTensor], step: int) -> None:
        """Called once per step with every trainable tensor before :meth:`direction` (e.g. to refresh global
        thresholds or factors). Does nothing by default."""

    @abstractmethod
    def direction(self, tensor: TrainableTensor, step: int) -> TensorDirection:
        """The direction of ``tensor`` at ``step``; it must stay valid for the whole step."""


class DenseDirections(DirectionRule):
    """Dense noise on every tensor: MeZO's perturbation."""

    def __init__(self, distribution: Distribution = "gaussian") -> None:
        self.dense = DenseDirection(distribution)

    def direction(self, tensor: TrainableTensor, step: int) -> TensorDirection:
        return self.dense

    def __repr__(self) -> str:
        return f"DenseDirections({self.dense.distribution!r})"


class ExcludedDirections(DirectionRule):
    """A direction rule for every tensor but those whose names match ``exclude``, which get dense noise.

    E.g. a sparse or low-rank rule on a pretrained body, with the new head perturbed densely. The inner rule never
    sees excluded tensors, not even in :meth:`prepare` (so global thresholds leave them out). State is the inner rule's.

    Args:
        inner: the rule for the included tensors.
        exclude: parameter-name regexes (``re.search``) of the tensors to perturb densely.
        distribution: the excluded tensors' noise.
    """

    def __init__(self, inner: DirectionRule, exclude: Sequence[str], distribution: Distribution = "gaussian") -> None:
        self.inner = inner
        self.exclude = list(exclude)
        self.patterns = [compile_pattern(pattern, "exclude") for pattern in self.exclude]
        self.dense = DenseDirection(distribution)

    def excluded(self, name: str) -> bool:
        return any(pattern.search(name) for pattern in self.patterns)

    def prepare(self, tensors: Sequence[TrainableTensor], step: int) -> None:
        self.inner.prepare([t for t in tensors if not self.excluded(t.name)], step)

    def direction(self, tensor: TrainableTensor, step: int) -> TensorDirection:
        return self.dense if self.excluded(tensor.name) else self.inner.direction(tensor, step)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()  # type: ignore[attr-defined, no-any-return]

    def load_state_dict(self, state: Mapping[str, Any], device_of: Mapping[str, torch.device] | None = None) -> None:
        self.inner.load_state_dict(state, device_of)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"ExcludedDirections({self.inner!r}, exclude={self.exclude!r})"


def compile_pattern(pattern: str, argument: str) -> re.Pattern[str]:
    """``re.compile(pattern)``, or a ``ValueError`` naming ``argument`` and the regex error."""
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"Invalid regex {pattern!r} in `{argument}`: {error}.") from None


class PerturbationStructure:
    """A selection and a direction rule; :meth:`plan` turns the trainable tensors into the step's plan.

    Args:
        selection: which tensors are active (default: all).
        directions: how z is formed on each (default: dense Gaussian).
        restore: a restore mode this structure needs (``"snapshot"`` for block rotation, whose active set is small
            enough to copy), or ``None`` to use the module's.
    """

    def __init__(
        self,
        selection: TensorSelection | None = None,
        directions: DirectionRule | None = None,
        restore: RestoreMode | None = None,
    ) -> None:
        self.selection = selection if selection is not None else AllTensors()
        self.directions = directions if directions is not None else DenseDirections()
        self.restore = restore
        # Which object installed each part ("selection", "directions"), so that two callbacks cannot both set one.
        self.owners: dict[str, object] = {}

    def plan(self, tensors: Sequence[TrainableTensor], step: int) -> list[ActiveTensor]:
        """The step's plan: selected tensors with their directions, keys and learning-rate scales."""
        self.directions.prepare(tensors, step)
        return [
            ActiveTensor(t.name, t.param, tensor_key(t.name), self.directions.direction(t, step), t.eps, scale)
            for t, scale in self.selection.select(tensors, step)
        ]

    def __repr__(self) -> str:
        return f"PerturbationStructure(selection={self.selection!r}, directions={self.directions!r})"


def dense_structure(distribution: Distribution = "gaussian") -> PerturbationStructure:
    """MeZO's structure: all tensors, dense noise of ``distribution``."""
    return PerturbationStructure(AllTensors(), DenseDirections(distribution))
