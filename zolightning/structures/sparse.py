"""``SparseDirections``: masked noise, masks refreshed every few steps (Sparse-MeZO, arXiv 2402.15751; ZO-Bench)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from zolightning.functional.directions import TensorDirection
from zolightning.functional.masked import (
    Criterion,
    MaskedDirection,
    MaskScope,
    MaskStorage,
    check_sparse_options,
    magnitude_mask,
    magnitude_threshold,
    pack_mask,
    random_mask,
    unpack_mask,
)
from zolightning.functional.noise import Distribution, check_distribution, mix_seed
from zolightning.structures.base import DirectionRule, TrainableTensor, tensor_key

_MASK_STREAM = 0x4D41534B


class SparseDirections(DirectionRule):
    """Masked noise on every tensor, masks refreshed every ``refresh_interval`` steps.

    Args:
        sparsity: fraction of each tensor's coordinates left unperturbed, in [0, 1).
        criterion: ``small-magnitude`` (Sparse-MeZO), ``large-magnitude`` or ``random`` (ZO-Bench).
        refresh_interval: steps between mask refreshes (1 = every step, as Sparse-MeZO).
        scope: ``per-tensor`` thresholds (each tensor keeps 1 − sparsity of its entries) or one ``global`` threshold
            over all trainable tensors (magnitude criteria).
        storage: ``mask`` keeps each mask from its first use in a refresh window until the next refresh (1 bit per
            entry in checkpoints); ``recompute`` keeps only the thresholds (magnitude) or nothing (random) and
            rebuilds the mask from the current weights or the seed at every step.
        seed: seeds random masks, overriding ``zo.seed`` (default ``None``: ``zo.seed``).
        distribution: noise on the perturbed entries, overriding ``zo.distribution`` (default ``None``).

    A mask is fixed for the whole step it is drawn in, so the update uses exactly the perturbation's mask.
    """

    def __init__(
        self,
        sparsity: float,
        criterion: Criterion = "small-magnitude",
        refresh_interval: int = 1,
        scope: MaskScope = "per-tensor",
        storage: MaskStorage = "mask",
        seed: int | None = None,
        distribution: Distribution | None = None,
    ) -> None:
        check_sparse_options(sparsity, criterion, refresh_interval, scope, storage)
        if distribution is not None:
            check_distribution(distribution)
        self.sparsity = sparsity
        self.criterion: Criterion = criterion
        self.refresh_interval = refresh_interval
        self.scope = scope
        self.storage = storage
        self.seed = seed
        self.distribution = distribution
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
        return MaskedDirection(mask, self.distribution_in_use())

    def _mask(self, tensor: TrainableTensor) -> Tensor:
        param = tensor.param
        if self.criterion == "random":
            seed = mix_seed(self.seed_in_use(), _MASK_STREAM, self.refresh_index or 0, tensor_key(tensor.name))
            return random_mask(param.shape, self.sparsity, seed, param.device)
        if tensor.name not in self.thresholds:
            self.thresholds[tensor.name] = magnitude_threshold(param.detach().abs(), self.sparsity, self.criterion)
        return magnitude_mask(param, self.thresholds[tensor.name], self.criterion)

    def config(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, "criterion": self.criterion, "refresh_interval": self.refresh_interval,
                "scope": self.scope, "storage": self.storage, "seed": self.seed, "distribution": self.distribution}

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
