"""Looking inside ZO runs: per-step diagnostics (:mod:`.step_diagnosis`), per-block views (:mod:`.blocks`), the
images a run logs (:mod:`.images`), and the learning-rate and ε finder (:mod:`.finder`) with its confirmation by real
steps (:mod:`.lr_confirmation`)."""

from zolightning.diagnostics.finder import FinderResult, find_lr_and_eps
from zolightning.diagnostics.step_diagnosis import StepDiagnosis, measure_step

__all__ = ["FinderResult", "StepDiagnosis", "find_lr_and_eps", "measure_step"]
