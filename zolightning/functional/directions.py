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

from zolightning.functional.counter_noise import (
    Rounding, add_counter_noise_, counter_sgd_update_, fill_counter_noise_,
)
from zolightning.functional.noise import Distribution, NoiseSource, check_distribution, fill_noise_

# The dtypes the fused counter kernels move in place (float64 weights are moved through a drawn z).
_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class TensorDirection(ABC):
    """Forms z for one tensor from a seed.

    Class attributes:
        coordinate_subspace: the directions span a set of coordinates (all of them, or a mask's), so that a positive
            diagonal preconditioner keeps their subspace.
    """

    coordinate_subspace: ClassVar[bool] = False

    @abstractmethod
    def sample(self, param: Tensor, seed: int, noise: NoiseSource = "torch") -> Tensor:
        """z with ``param.shape`` on ``param.device``, dtype fp32 (callers cast to the parameter's dtype), its random
        numbers from ``noise`` (:data:`~zolightning.functional.noise.NoiseSource`)."""

    def sample_slice(self, shard: Tensor, seed: int, noise: NoiseSource, offset: int) -> Tensor:
        """z of the elements ``offset … offset + shard.numel() − 1`` of the whole tensor (in its row-major order),
        shaped as ``shard``: a shard's part of the whole tensor's z. Only dense directions on counter noise know
        it (every element's value is a function of its index); the others raise a ``ValueError`` naming the fix."""
        raise ValueError(
            f"{type(self).__name__} cannot draw the z of one shard of a sharded parameter: only dense directions on "
            "counter noise can (MeZO, and MeZO-BCD's block selection). Drop the sparse, low-rank or preconditioned "
            "rule, keep `zo.noise: counter`, or train these weights unsharded."
        )

    def fuses(self, param: Tensor, noise: NoiseSource) -> bool:
        """Whether :meth:`add_to_` moves ``param`` in one pass, z generated in registers, never drawn into a buffer
        (only dense counter noise does). A direction that fuses also updates in one pass (``sgd_update_``, as
        :class:`DenseDirection`): ZO-SGD asks this question before calling it."""
        return False

    def add_to_(self, param: Tensor, seed: int, alpha: float, noise: NoiseSource = "torch", offset: int = 0) -> None:
        """θ ← θ + alpha·z in place, z = :meth:`sample` of ``seed`` (:meth:`sample_slice` from ``offset`` for a shard):
        fused where :meth:`fuses` (rounded once into θ's dtype, to nearest), else
        ``param.add_(z.to(param.dtype), alpha=alpha)``."""
        z = self.sample(param, seed, noise) if offset == 0 else self.sample_slice(param, seed, noise, offset)
        param.add_(z.to(param.dtype), alpha=alpha)

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

    def sample(self, param: Tensor, seed: int, noise: NoiseSource = "torch") -> Tensor:
        return fill_noise_(param.new_empty(param.shape, dtype=torch.float32), seed, self.distribution, noise)

    def sample_slice(self, shard: Tensor, seed: int, noise: NoiseSource, offset: int) -> Tensor:
        if noise != "counter":
            super().sample_slice(shard, seed, noise, offset)  # raises: torch noise is drawn per chunk of the whole
        return fill_counter_noise_(shard.new_empty(shard.shape, dtype=torch.float32), seed, 0, offset,
                                   distribution=self.distribution)

    def fuses(self, param: Tensor, noise: NoiseSource) -> bool:
        return noise == "counter" and param.dtype in _FUSED_DTYPES

    def add_to_(self, param: Tensor, seed: int, alpha: float, noise: NoiseSource = "torch", offset: int = 0) -> None:
        if self.fuses(param, noise):
            add_counter_noise_(param, alpha, seed, 0, offset=offset, distribution=self.distribution)
        else:
            super().add_to_(param, seed, alpha, noise, offset)

    def sgd_update_(
        self, param: Tensor, seed: int, projected_gradient: float, *, lr: float, weight_decay: float,
        restore: float, rounding: Rounding, rounding_seed: int, offset: int = 0,
    ) -> None:
        """ZO-SGD's update fused with the restore, in one pass where :meth:`fuses` (counter noise):
        θ ← (θ + restore·z)·(1 − lr·λ) − lr·g·z, rounded once into θ's dtype by ``rounding`` (stochastic rounding's
        uniforms from ``rounding_seed``). See :func:`~zolightning.functional.counter_noise.counter_sgd_update_`."""
        counter_sgd_update_(
            param, seed, 0, projected_gradient, lr=lr, weight_decay=weight_decay, restore=restore, offset=offset,
            distribution=self.distribution, rounding=rounding, rounding_seed=rounding_seed,
        )

    def subspace_energy(self, gradient: Tensor) -> Tensor:
        return gradient.float().square().sum()

    def __repr__(self) -> str:
        return f"DenseDirection(distribution={self.distribution!r})"

