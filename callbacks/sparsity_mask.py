"""``SparsityMask``: sparse perturbations (Sparse-MeZO, arXiv 2402.15751; ZO-Bench's random masks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import lightning.pytorch as pl
from typing_extensions import override

from zolightning.callbacks.structure_callback import StructureCallback
from zolightning.functional.masked import Criterion, SparseDirections, check_sparse_options
from zolightning.functional.structure import DirectionRule, ExcludedDirections, compile_pattern
from zolightning.module import ZOLightningModule


class SparsityMask(StructureCallback):
    """Perturb only a masked subset of each tensor's coordinates.

    Args:
        sparsity: fraction of coordinates left unperturbed, in [0, 1) (default 0.75: a quarter is perturbed).
        criterion: ``small-magnitude`` (default; Sparse-MeZO), ``large-magnitude`` or ``random`` (ZO-Bench).
        refresh_interval: steps between mask refreshes (default 1: recomputed each step from the current weights).
        scope: ``per-tensor`` thresholds (default) or one ``global`` threshold over all trainable tensors.
        storage: ``mask`` (default: keep masks, 1 bit per entry in checkpoints) or ``recompute`` (keep thresholds only
            and rebuild masks each step).
        seed: seeds random masks (default: the module's ``zo.seed``).
        exclude: parameter-name regexes of tensors perturbed densely instead (default none), e.g. ``["^head\\."]``
            for a new head on a sparse-perturbed pretrained body.

    Composes with :class:`BlockRotation` (a mask inside the active block); not with :class:`LowRankRefresh`.
    """

    part = "directions"

    def __init__(
        self,
        sparsity: float = 0.75,
        criterion: Criterion = "small-magnitude",
        refresh_interval: int = 1,
        scope: Literal["per-tensor", "global"] = "per-tensor",
        storage: Literal["mask", "recompute"] = "mask",
        seed: int | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        super().__init__()
        check_sparse_options(sparsity, criterion, refresh_interval, scope, storage)
        self.exclude = [compile_pattern(pattern, "exclude").pattern for pattern in exclude]
        self.sparsity = sparsity
        self.criterion: Criterion = criterion
        self.refresh_interval = refresh_interval
        self.scope = scope
        self.storage = storage
        self.seed = seed

    @override
    def build(self, trainer: pl.Trainer, pl_module: ZOLightningModule) -> DirectionRule:
        seed = pl_module.zo_config.seed if self.seed is None else self.seed
        distribution = pl_module.zo_config.distribution
        rule = SparseDirections(
            self.sparsity, self.criterion, self.refresh_interval, self.scope, self.storage, seed, distribution
        )
        return ExcludedDirections(rule, self.exclude, distribution) if self.exclude else rule
