"""Structure rules by name, for configs and sweeps: one line per rule."""

from __future__ import annotations

from typing import Any

from zolightning.structures.base import AllTensors, DenseDirections, StructureRule
from zolightning.structures.blocks import BlockSelection
from zolightning.structures.exclusion import ExcludedDirections
from zolightning.structures.layer_subset import LayerSubset
from zolightning.structures.low_rank import LowRankDirections
from zolightning.structures.sparse import SparseDirections

# Names follow the papers: MeZO (dense), MeZO-BCD, LeZO, Sparse-MeZO, LOZO / SubZero.
STRUCTURES: dict[str, type[StructureRule]] = {
    "all": AllTensors,
    "dense": DenseDirections,
    "bcd": BlockSelection,
    "lezo": LayerSubset,
    "sparse": SparseDirections,
    "low-rank": LowRankDirections,
    "excluded": ExcludedDirections,  # wraps one of the above: `inner` is a rule
}


def create_rule(name: str, **kwargs: Any) -> StructureRule:
    """The rule registered as ``name``, built with ``kwargs``.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if name not in STRUCTURES:
        raise ValueError(f"Unknown structure {name!r}; choose one of {sorted(STRUCTURES)}.")
    return STRUCTURES[name](**kwargs)
