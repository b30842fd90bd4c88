"""How the perturbation direction z is formed on one tensor.

A :class:`TensorDirection` turns a tensor seed into z with the tensor's shape. Dense directions draw one random
number per element; structured ones (masked, low-rank) live in their own modules and draw fewer. A direction is
pure with respect to the seed: the same seed always gives the same z, so the update can regenerate the direction the
estimate was taken along instead of storing it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from zolightning.functional.noise import Distribution, check_distribution, fill_noise_


class TensorDirection(ABC):
    """Forms z for one tensor from a seed."""

    @abstractmethod
    def sample(self, param: Tensor, seed: int) -> Tensor:
        """z with ``param.shape`` on ``param.device``, dtype fp32 (callers cast to the parameter's dtype)."""


class DenseDirection(TensorDirection):
    """z ~ N(0, I) (``gaussian``) or uniform on {−1, +1} (``rademacher``) over every element: MeZO's choice."""

    def __init__(self, distribution: Distribution = "gaussian") -> None:
        check_distribution(distribution)
        self.distribution: Distribution = distribution

    def sample(self, param: Tensor, seed: int) -> Tensor:
        return fill_noise_(param.new_empty(param.shape, dtype=torch.float32), seed, self.distribution)

    def __repr__(self) -> str:
        return f"DenseDirection(distribution={self.distribution!r})"

