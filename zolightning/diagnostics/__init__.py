"""Looking inside ZO runs: per-step diagnostics (:mod:`.measurement`), per-block views (:mod:`.blocks`) and the
learning-rate and ε finder (:mod:`.finder`)."""

from zolightning.diagnostics.finder import FinderResult, find_lr_and_eps
from zolightning.diagnostics.measurement import Measurement, measure_step

__all__ = ["FinderResult", "Measurement", "find_lr_and_eps", "measure_step"]
