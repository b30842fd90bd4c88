"""Estimators by name, for configs (``zo.estimator``): one line per estimator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from zolightning.estimators.base import Estimator
from zolightning.estimators.forward_gradient import ForwardGradient
from zolightning.estimators.fzoo import FZOO
from zolightning.estimators.one_sided import OneSided
from zolightning.estimators.two_sided import TwoSided

# name → (directions, root model) → estimator
ESTIMATORS: dict[str, Callable[[int, nn.Module | None], Estimator]] = {
    "two-sided": lambda directions, root: TwoSided(directions),
    "one-sided": lambda directions, root: OneSided(directions),
    "forward-gradient": lambda directions, root: ForwardGradient(root, directions),  # type: ignore[arg-type]
    "fzoo": lambda directions, root: FZOO(directions),
}


def check_estimator_name(name: Any) -> None:
    """Raise a ``ValueError`` naming ``estimator`` unless ``name`` is registered."""
    if name not in ESTIMATORS:
        raise ValueError(f"`estimator` must be one of {tuple(ESTIMATORS)}, got {name!r}.")


def create_estimator(name: str, directions: int = 1, root: nn.Module | None = None) -> Estimator:
    """The estimator registered as ``name`` with q = ``directions``; ``root`` is the model (needed by
    ``forward-gradient``)."""
    check_estimator_name(name)
    return ESTIMATORS[name](directions, root)
