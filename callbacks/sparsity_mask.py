"""``SparsityMask``: sparse perturbations (Sparse-MeZO, arXiv 2402.15751; ZO-Bench's random masks)."""

from __future__ import annotations

from collections.abc import Sequence

from zolightning.callbacks.structure_callback import StructureCallback
from zolightning.functional.masked import Criterion, MaskScope, MaskStorage
from zolightning.structures.exclusion import ExcludedDirections
from zolightning.structures.sparse import SparseDirections


class SparsityMask(StructureCallback):
    """Perturb only a masked subset of each tensor's coordinates: installs
    :class:`~zolightning.structures.SparseDirections` (wrapped in
    :class:`~zolightning.structures.ExcludedDirections` when ``exclude`` is given).

    Args:
        sparsity: fraction of coordinates left unperturbed, in [0, 1) (default 0.75: a quarter is perturbed).
        criterion: ``small-magnitude`` (default; Sparse-MeZO), ``large-magnitude`` or ``random`` (ZO-Bench).
        refresh_interval: steps between mask refreshes (default 1: recomputed each step from the current weights).
        scope: ``per-tensor`` thresholds (default) or one ``global`` threshold over all trainable tensors.
        storage: ``mask`` (default: keep masks, 1 bit per entry in checkpoints) or ``recompute`` (keep thresholds only
            and rebuild masks each step).
        seed: seeds random masks (default: ``zo.seed``).
        exclude: parameter-name regexes of tensors perturbed densely instead (default none), e.g. ``["^head\\."]``
            for a new head on a sparse-perturbed pretrained body.

    Composes with :class:`BlockRotation` (a mask inside the active block); not with :class:`LowRankRefresh`.
    """

    def __init__(
        self,
        sparsity: float = 0.75,
        criterion: Criterion = "small-magnitude",
        refresh_interval: int = 1,
        scope: MaskScope = "per-tensor",
        storage: MaskStorage = "mask",
        seed: int | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        rule = SparseDirections(sparsity, criterion, refresh_interval, scope, storage, seed)
        super().__init__(ExcludedDirections(rule, exclude) if exclude else rule)
