"""Schedules for the perturbation scale ε: a multiplier on the initial ε as a pure function of training progress."""

from __future__ import annotations

import math
from typing import Literal

from zolightning.functional.checks import check_choice, choices_of

EpsSchedule = Literal["constant", "linear", "cosine", "geometric"]
EPS_SCHEDULES = choices_of(EpsSchedule)


def check_eps_schedule(schedule: str, final_ratio: float) -> None:
    check_choice(schedule, EpsSchedule, "eps_schedule")
    if not final_ratio > 0:
        raise ValueError(f"`eps_final_ratio` must be > 0 (ε at the end over ε at the start), got {final_ratio}.")


def eps_factor(schedule: EpsSchedule, step: int, total_steps: int, final_ratio: float) -> float:
    """ε at ``step`` over the initial ε: 1 at step 0, ``final_ratio`` at ``total_steps`` (and after).

    ``linear`` and ``cosine`` interpolate between 1 and ``final_ratio``; ``geometric`` decays by a constant factor per
    step (ε shrinks in proportion, which suits a loss scale that falls during training); ``constant`` is 1 throughout.
    """
    check_eps_schedule(schedule, final_ratio)
    if schedule == "constant" or total_steps <= 0:
        return 1.0
    progress = min(max(step / total_steps, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 + (final_ratio - 1.0) * progress
    if schedule == "cosine":
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return final_ratio**progress
