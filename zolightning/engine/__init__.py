"""Layer 3: the step engine, which owns one ZO step from seed to update."""

from zolightning.engine.guards import DivergenceGuard, NonFiniteGuard
from zolightning.engine.step import StepEngine, StepResult, UpdateRule

__all__ = ["DivergenceGuard", "NonFiniteGuard", "StepEngine", "StepResult", "UpdateRule"]
