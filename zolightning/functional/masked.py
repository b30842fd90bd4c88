"""Sparse perturbations: z is zero outside a mask (Sparse-MeZO, arXiv 2402.15751; ZO-Bench's random masks).

``sparsity`` is the fraction of coordinates that are *not* perturbed: 0.75 perturbs a quarter of each tensor.
Criteria: ``small-magnitude`` perturbs the smallest |θ| (Sparse-MeZO), ``large-magnitude`` the largest, ``random``
a seeded Bernoulli(1 − sparsity) mask (ZO-Bench).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from zolightning.functional.directions import TensorDirection
from zolightning.functional.noise import Distribution, NoiseSource, check_distribution, fill_noise_, make_generator
from zolightning.functional.checks import check_choice, check_int_at_least

Criterion = Literal["small-magnitude", "large-magnitude", "random"]
MaskScope = Literal["per-tensor", "global"]
MaskStorage = Literal["mask", "recompute"]


class MaskedDirection(TensorDirection):
    """z = noise on the ``True`` entries of ``mask`` (the parameter's shape), 0 elsewhere.

    Only ``mask.sum()`` random numbers are drawn per sample, so the cost scales with the perturbed coordinates.
    """

    coordinate_subspace = True

    def __init__(self, mask: Tensor, distribution: Distribution = "gaussian") -> None:
        if mask.dtype != torch.bool:
            raise TypeError(f"`mask` must be a bool tensor, got {mask.dtype}.")
        check_distribution(distribution)
        self.mask = mask
        self.active = int(mask.sum())
        self.distribution: Distribution = distribution

    def sample(self, param: Tensor, seed: int, noise: NoiseSource = "torch") -> Tensor:
        if self.mask.shape != param.shape:
            raise ValueError(f"mask shape {tuple(self.mask.shape)} does not match parameter {tuple(param.shape)}.")
        values = fill_noise_(param.new_empty(self.active, dtype=torch.float32), seed, self.distribution, noise)
        return param.new_zeros(param.shape, dtype=torch.float32).masked_scatter_(self.mask, values)

    def subspace_energy(self, gradient: Tensor) -> Tensor:
        return gradient.float()[self.mask].square().sum()




def check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"`sparsity` must be in [0, 1) (the fraction of coordinates left unperturbed), got {sparsity}.")


def magnitude_threshold(magnitudes: Tensor, sparsity: float, criterion: Criterion) -> float:
    """The |θ| cut-off that leaves a fraction ``1 − sparsity`` of ``magnitudes`` (any shape) perturbed."""
    flat = magnitudes.reshape(-1).float()
    keep = max(1, round((1.0 - sparsity) * flat.numel()))
    if criterion == "small-magnitude":
        return float(torch.kthvalue(flat, keep).values)
    if criterion == "large-magnitude":
        return float(torch.kthvalue(flat, flat.numel() - keep + 1).values)
    raise ValueError(f"magnitude criteria are 'small-magnitude' and 'large-magnitude', got {criterion!r}.")


def magnitude_mask(param: Tensor, threshold: float, criterion: Criterion) -> Tensor:
    """Entries at or below (``small-magnitude``) or at or above (``large-magnitude``) ``threshold`` in |θ|."""
    magnitudes = param.detach().abs()
    return magnitudes <= threshold if criterion == "small-magnitude" else magnitudes >= threshold


def random_mask(shape: torch.Size, sparsity: float, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """A seeded Bernoulli(1 − sparsity) mask of ``shape``."""
    generator = make_generator(seed, device)
    return torch.rand(shape, generator=generator, device=device) >= sparsity


def pack_mask(mask: Tensor) -> Tensor:
    """A bool tensor as uint8 bits, 8 entries a byte (for checkpoints: 1/8 of a bool tensor's size)."""
    flat = mask.reshape(-1).to(torch.uint8).cpu()
    padded = torch.nn.functional.pad(flat, (0, (-flat.numel()) % 8)).view(-1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return (padded * weights).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: Tensor, shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
    """Inverse of :func:`pack_mask`."""
    numel = 1
    for size in shape:
        numel *= size
    shifts = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0], dtype=torch.uint8)
    bits = (packed.cpu().view(-1, 1) >> shifts) & 1
    return bits.reshape(-1)[:numel].bool().reshape(shape).to(device)


def check_sparse_options(sparsity: float, criterion: str, refresh_interval: int, scope: str, storage: str) -> None:
    """Raise a ``ValueError`` naming the first bad argument of a sparse rule."""
    check_sparsity(sparsity)
    check_choice(criterion, Criterion, "criterion")
    check_int_at_least(refresh_interval, 1, "refresh_interval")
    check_choice(scope, MaskScope, "scope")
    check_choice(storage, MaskStorage, "storage")
