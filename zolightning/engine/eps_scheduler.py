"""``EpsScheduler``: ε of each param group over training, the way torch's LR schedulers move lr.

ε lives in the optimizer's param groups, as lr does, and a group's ε is what the next step perturbs with. A
non-constant ``zo.eps_schedule`` owns each group's base ε (the value it started from) and writes base × factor(step)
into the group before each step is planned (:func:`~zolightning.functional.eps_schedule.eps_factor`), as an LR
scheduler writes lr. A value that someone else wrote into a group since the scheduler's last write (a user's
``group["eps"] = x``, the lr/ε finder, a replay setting the logged ε) is honoured: that step perturbs with exactly it,
and it becomes the new base (x / factor(step)), so the schedule goes on from it. The constant schedule (the default)
writes nothing: the group's ε is used as it is, whatever sets it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from zolightning.functional.eps_schedule import EpsSchedule, eps_factor


class EpsScheduler:
    """Writes each group's ε for a step (see the module docstring).

    Args:
        schedule: ``constant``, ``linear``, ``cosine`` or ``geometric`` (``zo.eps_schedule``).
        final_ratio: ε at the end over ε at the start (``zo.eps_final_ratio``).

    Attributes:
        base_eps: each group's base ε (``None`` until the first step it scheduled).
        written: the ε it last wrote into each group, to tell a value written by someone else.
    """

    def __init__(self, schedule: EpsSchedule, final_ratio: float) -> None:
        self.schedule = schedule
        self.final_ratio = final_ratio
        self.base_eps: list[float] | None = None
        self.written: list[float] | None = None

    def set(self, groups: Sequence[MutableMapping[str, Any]], key: str, step: int, total_steps: int | None) -> None:
        """Write ``groups[i][key]`` = ε of step ``step`` (nothing for the constant schedule).

        Raises:
            ValueError: a non-constant schedule without the run's length (``total_steps``).
        """
        if self.schedule == "constant":
            return
        if total_steps is None or total_steps <= 0:
            raise ValueError(
                f"`eps_schedule: {self.schedule}` needs the run's length: set `engine.total_steps` (the Trainer sets "
                "it from `max_steps`)."
            )
        factor = eps_factor(self.schedule, step, total_steps, self.final_ratio)
        if self.base_eps is None or self.written is None or len(self.base_eps) != len(groups):
            self.base_eps, self.written = [0.0] * len(groups), [float("nan")] * len(groups)
        for index, group in enumerate(groups):
            current = float(group[key])
            if current != self.written[index]:  # written by someone else since: it is this step's ε, and the new base
                self.base_eps[index] = current / factor
                value = current
            else:
                value = self.base_eps[index] * factor
            group[key] = value
            self.written[index] = value

    def state_dict(self) -> dict[str, Any]:
        return {"base_eps": self.base_eps, "written": self.written}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.base_eps = list(state["base_eps"]) if state.get("base_eps") is not None else None
        self.written = list(state["written"]) if state.get("written") is not None else None
