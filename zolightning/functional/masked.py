"""Sparse perturbations: z is zero outside a mask (Sparse-MeZO, arXiv 2402.15751; ZO-Bench's random masks).

``sparsity`` is the fraction of coordinates that are *not* perturbed: 0.75 perturbs a quarter of each tensor.
Criteria: ``small-magnitude`` perturbs the smallest |θ| (Sparse-MeZO), ``large-magnitude`` the largest, ``random``
a seeded Bernoulli(1 − sparsity) mask (ZO-Bench).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from zolightning.functional.directions import TensorDirection
from zolightning.functional.noise import Distribution, check_distribution, fill_noise_, make_generator, mix_seed
from zolightning.functional.structure import DirectionRule, TrainableTensor, tensor_key

Criterion = Literal["small-magnitude", "large-magnitude", "random"]
CRITERIA: tuple[str, ...] = ("small-magnitude", "large-magnitude", "random")


class MaskedDirection(TensorDirection):
    """z = noise on the ``True`` entries of ``mask`` (the parameter's shape), 0 elsewhere.

    Only ``mask.sum()`` random numbers are drawn per sample, so the cost scales with the perturbed coordinates.
    """

    def __init__(self, mask: Tensor, distribution: Distribution = "gaussian") -> None:
        if mask.dtype != torch.bool:
            raise TypeError(f"`mask` must be a bool tensor, got {mask.dtype}.")
        check_distribution(distribution)
        self.mask = mask
        self.active = int(mask.sum())
        self.distribution: Distribution = distribution

    def sample(self, param: Tensor, seed: int) -> Tensor:
        if self.mask.shape != param.shape:
            raise ValueError(f"mask shape {tuple(self.mask.shape)} does not match parameter {tuple(param.shape)}.")
        values = fill_noise_(param.new_empty(self.active, dtype=torch.float32), seed, self.distribution)
        return param.new_zeros(param.shape, dtype=torch.float32).masked_scatter_(self.mask, values)

    def numel_generated(self, param: Tensor) -> int:
        return self.active

    def expected_square_norm(self, param: Tensor) -> float:
        return float(self.active)


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


class SparseDirections(DirectionRule):
    """Masked noise on every tensor, masks refreshed every ``refresh_interval`` steps.

    Args:
        sparsity: fraction of each tensor's coordinates left unperturbed, in [0, 1).
        criterion: one of :data:`CRITERIA`.
        refresh_interval: steps between mask refreshes (1 = every step, as Sparse-MeZO).
        scope: ``per-tensor`` thresholds (each tensor keeps 1 − sparsity of its entries) or one ``global`` threshold
            over all trainable tensors (magnitude criteria).
        storage: ``mask`` keeps each mask from its first use in a refresh window until the next refresh (1 bit per
            entry in checkpoints); ``recompute`` keeps only the thresholds (magnitude) or nothing (random) and
            rebuilds the mask from the current weights or the seed at every step.
        seed: seeds random masks.
        distribution: noise on the perturbed entries.

    A mask is fixed for the whole step it is drawn in, so the update uses exactly the perturbation's mask.
    """

    def __init__(
        self,
        sparsity: float,
        criterion: Criterion = "small-magnitude",
        refresh_interval: int = 1,
        scope: Literal["per-tensor", "global"] = "per-tensor",
        storage: Literal["mask", "recompute"] = "mask",
        seed: int = 0,
        distribution: Distribution = "gaussian",
    ) -> None:
        check_sparse_options(sparsity, criterion, refresh_interval, scope, storage)
        check_distribution(distribution)
        self.sparsity = sparsity
        self.criterion: Criterion = criterion
        self.refresh_interval = refresh_interval
        self.scope = scope
        self.storage = storage
        self.seed = seed
        self.distribution: Distribution = distribution
        self.refresh_index: int | None = None
        self.thresholds: dict[str, float] = {}
        self.masks: dict[str, Tensor] = {}

    def prepare(self, tensors: Sequence[TrainableTensor], step: int) -> None:
        refresh = step // self.refresh_interval
        if refresh == self.refresh_index:
            return
        self.refresh_index = refresh
        self.masks.clear()
        self.thresholds.clear()
        if self.scope == "global" and self.criterion != "random":
            magnitudes = torch.cat([t.param.detach().abs().reshape(-1).float().cpu() for t in tensors])
            threshold = magnitude_threshold(magnitudes, self.sparsity, self.criterion)
            self.thresholds = {t.name: threshold for t in tensors}

    def direction(self, tensor: TrainableTensor, step: int) -> TensorDirection:
        mask = self.masks.get(tensor.name)
        if mask is None:
            mask = self._mask(tensor)
            if self.storage == "mask":
                self.masks[tensor.name] = mask
        return MaskedDirection(mask, self.distribution)

    def _mask(self, tensor: TrainableTensor) -> Tensor:
        param = tensor.param
        if self.criterion == "random":
            seed = mix_seed(self.seed, _MASK_STREAM, self.refresh_index or 0, tensor_key(tensor.name))
            return random_mask(param.shape, self.sparsity, seed, param.device)
        if tensor.name not in self.thresholds:
            self.thresholds[tensor.name] = magnitude_threshold(param.detach().abs(), self.sparsity, self.criterion)
        return magnitude_mask(param, self.thresholds[tensor.name], self.criterion)

    def state_dict(self) -> dict[str, Any]:
        """Refresh index, thresholds and (``storage="mask"``) packed masks: types that load with weights_only."""
        return {
            "refresh_index": self.refresh_index,
            "thresholds": dict(self.thresholds),
            "masks": {name: {"bits": pack_mask(m), "shape": list(m.shape)} for name, m in self.masks.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any], device_of: Mapping[str, torch.device] | None = None) -> None:
        self.refresh_index = state["refresh_index"]
        self.thresholds = dict(state["thresholds"])
        device_of = device_of or {}
        self.masks = {
            name: unpack_mask(entry["bits"], tuple(entry["shape"]), device_of.get(name, "cpu"))
            for name, entry in state["masks"].items()
        }

    def __repr__(self) -> str:
        return (
            f"SparseDirections(sparsity={self.sparsity}, criterion={self.criterion!r}, "
            f"refresh_interval={self.refresh_interval}, scope={self.scope!r}, storage={self.storage!r})"
        )


SCOPES: tuple[str, ...] = ("per-tensor", "global")
STORAGES: tuple[str, ...] = ("mask", "recompute")
_MASK_STREAM = 0x4D41534B


def check_sparse_options(sparsity: float, criterion: str, refresh_interval: int, scope: str, storage: str) -> None:
    """Raise a ``ValueError`` naming the first bad argument of :class:`SparseDirections`."""
    check_sparsity(sparsity)
    check_criterion(criterion)
    check_interval(refresh_interval, "refresh_interval")
    if scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {SCOPES}, got {scope!r}.")
    if storage not in STORAGES:
        raise ValueError(f"`storage` must be one of {STORAGES}, got {storage!r}.")


def check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise ValueError(f"`criterion` must be one of {CRITERIA}, got {criterion!r}.")


def check_interval(value: int, argument: str) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"`{argument}` must be an integer >= 1, got {value!r}.")
