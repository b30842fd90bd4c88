"""How the perturbation direction z is formed on one tensor.

A :class:`TensorDirection` turns a tensor seed into z with the tensor's shape. Dense directions draw one random
number per element; structured ones (masked, low-rank) live in their own modules and draw fewer. A direction is
pure with respect to the seed: the same seed always gives the same z, so the update can regenerate the direction the
estimate was taken along instead of storing it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from zolightning.functional.noise import Distribution, check_distribution, fill_noise_


class TensorDirection(ABC):
    """Forms z for one tensor from a seed.

    Class attributes:
        coordinate_subspace: the directions span a set of coordinates (all of them, or a mask's), so that a positive
            diagonal preconditioner keeps their subspace.
    """

    coordinate_subspace: ClassVar[bool] = False

    @abstractmethod
    def sample(self, param: Tensor, seed: int) -> Tensor:
        """z with ``param.shape`` on ``param.device``, dtype fp32 (callers cast to the parameter's dtype)."""

    def subspace_energy(self, gradient: Tensor) -> Tensor | None:
        """‖P·g‖²: the squared norm of ``gradient`` (the parameter's shape) projected onto the subspace the directions
        span (the whole space for dense noise, the mask's support, the span of the kept low-rank factors). A 0-dim
        fp32 tensor; MeZO-BCD v2's subspace alignment is its sum over the plan over ‖g‖². ``None`` (the default) when
        the direction does not know its subspace: the alignment diagnostic is then not reported."""
        return None


class DenseDirection(TensorDirection):
    """z ~ N(0, I) (``gaussian``) or uniform on {−1, +1} (``rademacher``) over every element: MeZO's choice."""

    coordinate_subspace = True

    def __init__(self, distribution: Distribution = "gaussian") -> None:
        check_distribution(distribution)
        self.distribution: Distribution = distribution

    def sample(self, param: Tensor, seed: int) -> Tensor:
        return fill_noise_(param.new_empty(param.shape, dtype=torch.float32), seed, self.distribution)

    def subspace_energy(self, gradient: Tensor) -> Tensor:
        return gradient.float().square().sum()

    def __repr__(self) -> str:
        return f"DenseDirection(distribution={self.distribution!r})"

