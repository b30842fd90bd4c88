"""Layer 2: perturbation structures, stateful rules that say which tensors a step perturbs and how z is formed."""

from zolightning.structures.base import (
    AllTensors,
    DenseDirections,
    DirectionRule,
    PerturbationStructure,
    StructureRule,
    TensorSelection,
    TrainableTensor,
    trainable_tensors,
)
from zolightning.structures.blocks import BlockSelection
from zolightning.structures.exclusion import ExcludedDirections
from zolightning.structures.layer_subset import LayerSubset
from zolightning.structures.low_rank import LowRankDirections
from zolightning.structures.registry import STRUCTURES, create_rule
from zolightning.structures.sparse import SparseDirections

__all__ = [
    "AllTensors",
    "BlockSelection",
    "DenseDirections",
    "DirectionRule",
    "ExcludedDirections",
    "LayerSubset",
    "LowRankDirections",
    "PerturbationStructure",
    "STRUCTURES",
    "SparseDirections",
    "StructureRule",
    "TensorSelection",
    "TrainableTensor",
    "create_rule",
    "trainable_tensors",
]
