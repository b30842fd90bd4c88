"""``LowRankDirections``: LOZO's and SubZero's low-rank directions, with factors kept between refreshes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from zolightning.functional.checks import check_choice, check_int_at_least
from zolightning.functional.directions import DenseDirection, TensorDirection
from zolightning.functional.low_rank import LowRankDirection, LowRankMode, draw_factors
from zolightning.functional.noise import Distribution, mix_seed
from zolightning.structures.base import DirectionRule, TrainableTensor, tensor_key

_FACTOR_STREAM = 0x46414354


class LowRankDirections(DirectionRule):
    """Low-rank directions on tensors of two or more dimensions, dense noise on 1-D tensors (biases, norms).

    Args:
        rank: r ≥ 1 (capped at each matrix's smaller side). LOZO uses 1 or 2; SubZero e.g. 24.
        refresh_interval: steps between factor refreshes (LOZO's ν, e.g. 50 or 100; SubZero's T₀, e.g. 1000).
        mode: ``lozo`` or ``subzero``.
        seed: seeds the factors, overriding ``zo.seed`` (default ``None``: ``zo.seed``); each tensor's factors at
            refresh k come from (seed, k, tensor key).
        distribution: noise of the dense fallback, overriding ``zo.distribution`` (default ``None``).

    Memory: the kept factors, (n × r) per matrix for LOZO and (m + n) × r for SubZero, fp32.
    """

    def __init__(
        self,
        rank: int = 2,
        refresh_interval: int = 50,
        mode: LowRankMode = "lozo",
        seed: int | None = None,
        distribution: Distribution | None = None,
    ) -> None:
        check_int_at_least(rank, 1, "rank")
        check_int_at_least(refresh_interval, 1, "refresh_interval")
        check_choice(mode, LowRankMode, "mode")
        self.rank = rank
        self.refresh_interval = refresh_interval
        self.mode: LowRankMode = mode
        self.seed = seed
        self.distribution = distribution
        self.dense = DenseDirection(self.distribution_in_use())
        self.factors: dict[str, tuple[int, tuple[Tensor, ...]]] = {}

    def bind(self, module: nn.Module | None, seed: int, distribution: Distribution) -> None:
        super().bind(module, seed, distribution)
        self.dense = DenseDirection(self.distribution_in_use())

    def direction(self, tensor: TrainableTensor, step: int) -> TensorDirection:
        if tensor.param.dim() < 2:
            return self.dense
        refresh = step // self.refresh_interval
        kept = self.factors.get(tensor.name)
        if kept is None or kept[0] != refresh:
            seed = mix_seed(self.seed_in_use(), _FACTOR_STREAM, refresh, tensor_key(tensor.name))
            kept = (refresh, draw_factors(tensor.param, self.mode, self.rank, seed))
            self.factors[tensor.name] = kept
        return LowRankDirection(self.mode, kept[1])

    def config(self) -> dict[str, Any]:
        return {"rank": self.rank, "refresh_interval": self.refresh_interval, "mode": self.mode, "seed": self.seed,
                "distribution": self.distribution}

    def state_dict(self) -> dict[str, Any]:
        """The kept factors with their refresh index, per tensor name (CPU tensors)."""
        return {name: {"refresh": r, "factors": [f.cpu() for f in fs]} for name, (r, fs) in self.factors.items()}

    def load_state_dict(self, state: Mapping[str, Any], device_of: Mapping[str, torch.device] | None = None) -> None:
        device_of = device_of or {}
        self.factors = {
            name: (int(entry["refresh"]), tuple(f.to(device_of.get(name, "cpu")) for f in entry["factors"]))
            for name, entry in state.items()
        }

    def __repr__(self) -> str:
        return f"LowRankDirections(rank={self.rank}, refresh_interval={self.refresh_interval}, mode={self.mode!r})"
