"""Trajectory logs: a ZO run as its base weights' fingerprint and a few bytes per step, replayed bitwise.

:mod:`~zolightning.trajectory.format` encodes the ``.zot`` file (``docs/trajectory-format.md``),
:class:`~zolightning.trajectory.writer.TrajectoryWriter` appends to it, ``zolightning.callbacks.TrajectoryLog`` records a
Lightning run, and :func:`replay` (or ``python -m zolightning.replay``) applies a log to the base weights.
"""

from zolightning.trajectory.format import (
    FORMAT_VERSION,
    StepRecord,
    Trajectory,
    TrajectoryError,
    WeightsRecord,
    read_trajectory,
    weights_fingerprint,
)
from zolightning.trajectory.replay import ReplayResult, replay
from zolightning.trajectory.writer import TrajectoryWriter

__all__ = [
    "FORMAT_VERSION",
    "ReplayResult",
    "StepRecord",
    "Trajectory",
    "TrajectoryError",
    "TrajectoryWriter",
    "WeightsRecord",
    "read_trajectory",
    "replay",
    "weights_fingerprint",
]
