"""Lightning callbacks for zolightning (installed as ``zolightning.callbacks``)."""

from zolightning.callbacks.block_rotation import BlockRotation
from zolightning.callbacks.held_out_evaluation import HeldOutEvaluation, LabelPredictor
from zolightning.callbacks.low_rank_refresh import LowRankRefresh
from zolightning.callbacks.sparsity_mask import SparsityMask
from zolightning.callbacks.structure_callback import StructureCallback
from zolightning.callbacks.zo_progress_bar import ZOProgressBar

__all__ = ["BlockRotation", "HeldOutEvaluation", "LabelPredictor", "LowRankRefresh", "SparsityMask", "StructureCallback", "ZOProgressBar"]
