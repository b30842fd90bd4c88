"""``LowRankRefresh``: low-rank perturbations of weight matrices (LOZO, arXiv 2410.07698; SubZero, arXiv 2410.08989)."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
from typing_extensions import override

from zolightning.callbacks.structure_callback import StructureCallback
from zolightning.functional.low_rank import LowRankDirections, LowRankMode
from zolightning.functional.structure import DirectionRule, ExcludedDirections, compile_pattern
from zolightning.module import ZOLightningModule


class LowRankRefresh(StructureCallback):
    """Perturb each weight matrix along a low-rank direction whose factors are refreshed periodically.

    Args:
        rank: r (default 2; LOZO uses 1 or 2, SubZero e.g. 24). Capped at each matrix's smaller side.
        refresh_interval: steps between factor refreshes (default 50; LOZO's ν ∈ {50, 100}, SubZero's T₀ e.g. 1000).
        mode: ``lozo`` (z = U·Vᵀ/√r, U each step, V kept) or ``subzero`` (z = U·S·Vᵀ·√(mn)/r, orthonormal U, V kept,
            S each step). 1-D tensors (biases, norms) get dense noise.
        seed: seeds the factors (default: the module's ``zo.seed``).
        exclude: parameter-name regexes of tensors perturbed densely instead (default none).

    State: the kept factors per parameter name. Composes with :class:`BlockRotation`; not with :class:`SparsityMask`.
    """

    part = "directions"

    def __init__(
        self,
        rank: int = 2,
        refresh_interval: int = 50,
        mode: LowRankMode = "lozo",
        seed: int | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.exclude = [compile_pattern(pattern, "exclude").pattern for pattern in exclude]
        # Validate now, with the same checks the rule applies, so that a bad YAML value fails before any training.
        LowRankDirections(rank, refresh_interval, mode)
        self.rank = rank
        self.refresh_interval = refresh_interval
        self.mode: LowRankMode = mode
        self.seed = seed

    @override
    def build(self, trainer: pl.Trainer, pl_module: ZOLightningModule) -> DirectionRule:
        seed = pl_module.zo_config.seed if self.seed is None else self.seed
        distribution = pl_module.zo_config.distribution
        rule = LowRankDirections(self.rank, self.refresh_interval, self.mode, seed, distribution)
        return ExcludedDirections(rule, self.exclude, distribution) if self.exclude else rule
