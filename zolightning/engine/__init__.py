"""Layer 3: the step engine, which owns the first of a ZO step's two calls, ``measure`` (seed to measurement)."""

from zolightning.engine.guards import DivergenceGuard, LossRiseGuard, NonFiniteGuard
from zolightning.engine.measurement import Measurement, PointPlan, Recorded, Update, UpdateTarget
from zolightning.engine.step import StepEngine

__all__ = [
    "DivergenceGuard",
    "LossRiseGuard",
    "Measurement",
    "NonFiniteGuard",
    "PointPlan",
    "Recorded",
    "StepEngine",
    "Update",
    "UpdateTarget",
]
