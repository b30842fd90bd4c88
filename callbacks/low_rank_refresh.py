"""``LowRankRefresh``: low-rank perturbations of weight matrices (LOZO, arXiv 2410.07698; SubZero, arXiv 2410.08989)."""

from __future__ import annotations

from collections.abc import Sequence

from zolightning.callbacks.structure_callback import StructureCallback
from zolightning.functional.low_rank import LowRankMode
from zolightning.structures.exclusion import ExcludedDirections
from zolightning.structures.low_rank import LowRankDirections


class LowRankRefresh(StructureCallback):
    """Perturb each weight matrix along a low-rank direction whose factors are refreshed periodically: installs
    :class:`~zolightning.structures.LowRankDirections` (wrapped in
    :class:`~zolightning.structures.ExcludedDirections` when ``exclude`` is given).

    Args:
        rank: r (default 2; LOZO uses 1 or 2, SubZero e.g. 24). Capped at each matrix's smaller side.
        refresh_interval: steps between factor refreshes (default 50; LOZO's ν ∈ {50, 100}, SubZero's T₀ e.g. 1000).
        mode: ``lozo`` (z = U·Vᵀ/√r, U each step, V kept) or ``subzero`` (z = U·S·Vᵀ·√(mn)/r, orthonormal U, V kept,
            S each step). 1-D tensors (biases, norms) get dense noise.
        seed: seeds the factors (default: ``zo.seed``).
        exclude: parameter-name regexes of tensors perturbed densely instead (default none), e.g. a new head.

    State: the kept factors per parameter name. Composes with :class:`BlockRotation`; not with :class:`SparsityMask`.
    """

    def __init__(
        self,
        rank: int = 2,
        refresh_interval: int = 50,
        mode: LowRankMode = "lozo",
        seed: int | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        rule = LowRankDirections(rank, refresh_interval, mode, seed)
        super().__init__(ExcludedDirections(rule, exclude) if exclude else rule)
