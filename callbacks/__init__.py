"""Lightning callbacks for zolightning (installed as ``zolightning.callbacks``)."""

from zolightning.callbacks.block_rotation import BlockRotation
from zolightning.callbacks.dev_selection import DevSelection
from zolightning.callbacks.held_out_evaluation import HeldOutEvaluation, LabelPredictor
from zolightning.callbacks.low_rank_refresh import LowRankRefresh
from zolightning.callbacks.peak_memory import PeakMemory
from zolightning.callbacks.sparsity_mask import SparsityMask
from zolightning.callbacks.structure_callback import StructureCallback
from zolightning.callbacks.trajectory_log import TrajectoryLog
from zolightning.callbacks.trajectory_replay import TrajectoryReplay
from zolightning.callbacks.zo_diagnostics import ZODiagnostics
from zolightning.callbacks.zo_lr_finder import ZOLearningRateFinder
from zolightning.callbacks.zo_progress_bar import ZOProgressBar

__all__ = [
    "BlockRotation",
    "DevSelection",
    "HeldOutEvaluation",
    "LabelPredictor",
    "LowRankRefresh",
    "PeakMemory",
    "SparsityMask",
    "StructureCallback",
    "TrajectoryLog",
    "TrajectoryReplay",
    "ZODiagnostics",
    "ZOLearningRateFinder",
    "ZOProgressBar",
]
