"""``ExcludedDirections``: a direction rule for most tensors, dense noise for those matched by name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from zolightning.functional.checks import compile_patterns
from zolightning.functional.directions import DenseDirection, TensorDirection
from zolightning.functional.noise import Distribution
from zolightning.structures.base import DirectionRule, TrainableTensor


class ExcludedDirections(DirectionRule):
    """``inner`` for every tensor but those whose names match ``exclude``, which get dense noise.

    E.g. a sparse or low-rank rule on a pretrained body, with the new head perturbed densely. The inner rule never
    sees excluded tensors, not even in :meth:`prepare` (so global thresholds leave them out). State is the inner rule's.

    Args:
        inner: the rule for the included tensors.
        exclude: parameter-name regexes (``re.search``) of the tensors to perturb densely.
        distribution: the excluded tensors' noise, overriding ``zo.distribution`` (default ``None``).
    """

    def __init__(self, inner: DirectionRule, exclude: Sequence[str], distribution: Distribution | None = None) -> None:
        self.inner = inner
        self.exclude = list(exclude)
        self.patterns = compile_patterns(self.exclude, "exclude")
        self.distribution = distribution
        self.dense = DenseDirection(self.distribution_in_use())

    def excluded(self, name: str) -> bool:
        return any(pattern.search(name) for pattern in self.patterns)

    def bind(self, module: nn.Module | None, seed: int, distribution: Distribution) -> None:
        super().bind(module, seed, distribution)
        self.inner.bind(module, seed, distribution)
        self.dense = DenseDirection(self.distribution_in_use())

    def prepare(self, tensors: Sequence[TrainableTensor], step: int) -> None:
        self.inner.prepare([t for t in tensors if not self.excluded(t.name)], step)

    def direction(self, tensor: TrainableTensor, step: int) -> TensorDirection:
        return self.dense if self.excluded(tensor.name) else self.inner.direction(tensor, step)

    def config(self) -> dict[str, Any]:
        return {"inner": self.inner, "exclude": list(self.exclude), "distribution": self.distribution}

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any], device_of: Mapping[str, torch.device] | None = None) -> None:
        self.inner.load_state_dict(state, device_of)

    def __repr__(self) -> str:
        return f"ExcludedDirections({self.inner!r}, exclude={self.exclude!r})"
