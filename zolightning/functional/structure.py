"""Perturbation structures: which tensors a step perturbs and how z is formed on each.

A structure turns the trainable tensors (with their ε) into the step's :class:`ActiveTensor` plan. The dense structure
perturbs every tensor with dense noise, as MeZO does; block, sparse and low-rank structures select fewer tensors or
fewer coordinates. A structure decides per step and may keep state (a block cursor, masks, factors): the callbacks
that own that state checkpoint it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from torch import Tensor

from zolightning.functional.directions import DenseDirection
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


class PerturbationStructure(ABC):
    """Chooses the step's plan from the trainable tensors."""

    @abstractmethod
    def plan(self, tensors: Sequence[TrainableTensor], step: int) -> list[ActiveTensor]:
        """The tensors to perturb at ``step`` (the optimizer step counter) with their directions."""


class DenseStructure(PerturbationStructure):
    """Every trainable tensor, dense noise: the MeZO perturbation."""

    def __init__(self, distribution: Distribution = "gaussian") -> None:
        self.direction = DenseDirection(distribution)

    def plan(self, tensors: Sequence[TrainableTensor], step: int) -> list[ActiveTensor]:
        return [ActiveTensor(t.name, t.param, tensor_key(t.name), self.direction, t.eps) for t in tensors]

    def __repr__(self) -> str:
        return f"DenseStructure(distribution={self.direction.distribution!r})"
