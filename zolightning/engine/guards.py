"""Checks on each update's losses: non-finite steps are skipped (and stop a run after too many), a loss that runs
away from its best value stops the run with an error that names the learning rate, and a loss that drifts up by a
smaller factor gets one warning."""

from __future__ import annotations

import math
import statistics
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from zolightning.engine import collectives
from zolightning.functional.estimate import DirectionalEstimate


def describe_losses(estimate: DirectionalEstimate) -> str:
    """The losses an estimate measured, by name (``L+ = …, L− = …``); losses never evaluated are left out."""
    parts = [("L+", estimate.loss_plus), ("L-", estimate.loss_minus), ("L0", estimate.loss_center)]
    parts.append(("dL", estimate.derivative))
    return ", ".join(f"{name} = {float(value):.6g}" for name, value in parts if value is not None)


class NonFiniteGuard:
    """Counts steps whose losses are not finite; ``limit`` in a row raise ``FloatingPointError``.

    The check runs on the losses after the cross-rank reduce, so every rank skips the same steps and none can skip
    alone and deadlock the others.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.streak = 0

    def observe(self, estimates: Sequence[DirectionalEstimate]) -> bool:
        """Whether every loss is finite; raises once ``limit`` non-finite steps came in a row."""
        if all(estimate.is_finite for estimate in estimates):
            self.streak = 0
            return True
        self.total += 1
        self.streak += 1
        if self.streak >= self.limit:
            raise FloatingPointError(
                f"{self.streak} ZO steps in a row had a non-finite loss ({describe_losses(estimates[0])}); training "
                "stopped. Skipped steps updated nothing and restored the weights: bitwise with a snapshot restore, within "
                "2 ulp of |θ| + 2ε|z| with the arithmetic one. Lower the learning rate or eps, check the data, or use "
                "fp32 weights; raise `zo.max_nonfinite` to tolerate more."
            )
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "streak": self.streak}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.total = int(state.get("total", 0))
        self.streak = int(state.get("streak", 0))


class DivergenceGuard:
    """Stops a run whose loss runs away: a backprop learning rate used for ZO (SGD at 0.1, Adam at 0.02) drives the
    loss to huge but finite values, and nothing else would say so.

    The signal: with L₁ the first update's loss and L* the best so far, the run diverged when
    L − L* > ``factor``·max(|L₁|, |L*|) for :attr:`PATIENCE` updates in a row. A noisy batch does not trip it (it must
    persist), and a loss on any scale works (the margin is relative to the loss's own starting scale).

    Args:
        factor: the margin, in units of the starting loss scale (``None`` disables the check).
    """

    PATIENCE = 3

    def __init__(self, factor: float | None) -> None:
        self.factor = factor
        self.first: float | None = None
        self.best = math.inf
        self.strikes = 0

    def observe(self, loss: float, learning_rates: Sequence[float]) -> None:
        if self.factor is None or not math.isfinite(loss):
            return
        if self.first is None:
            self.first = loss
        self.best = min(self.best, loss)
        scale = max(abs(self.first), abs(self.best), 1e-12)
        self.strikes = self.strikes + 1 if loss - self.best > self.factor * scale else 0
        if self.strikes >= self.PATIENCE:
            rates = ", ".join(f"{lr:g}" for lr in sorted(set(learning_rates)))
            raise FloatingPointError(
                f"ZO training diverged: the loss went from {self.first:.4g} (best {self.best:.4g}) to {loss:.4g} and "
                f"stayed that high for {self.PATIENCE} steps, with learning rate {rates}. That is usually a backprop "
                "learning rate: ZO needs a far smaller one (MeZO uses 1e-6 to 1e-7 for full fine-tuning, 1e-4 for "
                "LoRA). Lower the optimizer's `lr` by 100-10000x (e.g. `ZOSGD(lr=1e-4)`), or measure one with the ZO "
                "finder (the `zolightning.callbacks.ZOLearningRateFinder` callback); `zo.divergence_factor: null` "
                "turns this check off."
            )

    def state_dict(self) -> dict[str, Any]:
        return {"first": self.first, "best": self.best, "strikes": self.strikes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.first = state.get("first")
        self.best = float(state.get("best", math.inf))
        self.strikes = int(state.get("strikes", 0))


class LossRiseGuard:
    """Warns, once per run, when the training loss drifts up without running away: a learning rate a few times too
    large for ZO (Adam at 0.02 on ZO estimates: the loss of Lightning's demo model goes 2.5 → 6.4 in 400 steps)
    stays far below :class:`DivergenceGuard`'s margin, and training would go on silently.

    The signal: m, the median of the last :attr:`WINDOW` update losses (a median, so that a few unlucky batches do
    not move it), against m*, the lowest m so far. The loss has risen when m − m* > (``factor`` − 1)·s with
    s = max(|m*|, 1% of the first window's |m|); for a positive loss that is m > ``factor``·m*. The floor on s keeps a
    loss that has converged to about 0 from warning at noise. Training continues: the warning is for the person.

    Args:
        factor: how many times its best the smoothed loss may grow before the warning (``None`` disables it).
    """

    WINDOW = 50
    """Updates per median: long enough that batch noise averages out, short enough to see a drift within a few
    hundred steps."""

    def __init__(self, factor: float | None) -> None:
        self.factor = factor
        self.recent: deque[float] = deque(maxlen=self.WINDOW)
        self.first: float | None = None
        self.best = math.inf
        self.best_update = 0
        self.updates = 0
        self.warned = False

    def observe(self, loss: float, learning_rates: Sequence[float]) -> None:
        """Take one update's loss (non-finite ones are ignored); warns the first time the smoothed loss has risen."""
        if self.factor is None or self.warned or not math.isfinite(loss):
            return
        self.updates += 1
        self.recent.append(loss)
        if len(self.recent) < self.WINDOW:
            return
        median = statistics.median(self.recent)
        if self.first is None:
            self.first = median
        if median < self.best:
            self.best, self.best_update = median, self.updates
        scale = max(abs(self.best), 0.01 * abs(self.first), 1e-12)
        if median - self.best > (self.factor - 1) * scale:
            self.warned = True
            if collectives.rank() == 0:  # every rank sees the same losses: one warning per run, not per rank
                warnings.warn(self.message(median, learning_rates), UserWarning, stacklevel=2)

    def message(self, median: float, learning_rates: Sequence[float]) -> str:
        """The warning: what rose, by how much, with which learning rate, and what to change."""
        rates = ", ".join(f"{lr:g}" for lr in sorted(set(learning_rates)))
        return (
            f"ZO training loss is rising: the median of the last {self.WINDOW} update losses is {median:.4g}, more "
            f"than {self.factor:g}x its best {self.best:.4g} (reached at update {self.best_update}; now update "
            f"{self.updates}), with learning rate {rates}. A ZO step moves the weights along a random direction, so a "
            "learning rate too large for ZO makes the loss drift up instead of down (with torch.optim's Adam, "
            "AdamW, RMSprop or Adagrad every weight moves by about lr each step). Lower the learning rate (e.g. 10x), "
            "use a ZO optimizer (`zolightning.optim.ZOSGD`, or `ZOAdam` at lr 1e-4 or below), or measure one with "
            "the `zolightning.callbacks.ZOLearningRateFinder` callback. Training continues; "
            "`zo.loss_rise_factor: null` turns this warning off."
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "recent": list(self.recent), "first": self.first, "best": self.best, "best_update": self.best_update,
            "updates": self.updates, "warned": self.warned,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.recent = deque((float(v) for v in state.get("recent", [])), maxlen=self.WINDOW)
        self.first = state.get("first")
        self.best = float(state.get("best", math.inf))
        self.best_update = int(state.get("best_update", 0))
        self.updates = int(state.get("updates", 0))
        self.warned = bool(state.get("warned", False))


class TieGuard:
    """Counts steps whose two losses tie, and warns once, with the causes, when most recent steps do.

    A tie is L+ = L− exactly, or a difference within 4 units in the last place of fp32 at the losses' size: the
    estimate is then 0 (or rounding noise) and the step moves nothing. Frequent ties mean the objective cannot see
    the perturbation: a piecewise-constant objective (an error rate over a small batch moves in steps of 1/batch), or
    an ε that rounding erases. :attr:`share` (ties over the last :attr:`WINDOW` steps) is logged as
    ``train/tie_share``.

    Args:
        threshold: the share of ties over a full window that warns (default 0.5; ``None`` disables the warning).
    """

    WINDOW = 50
    """Steps per share."""

    def __init__(self, threshold: float | None = 0.5) -> None:
        self.threshold = threshold
        self.recent: deque[bool] = deque(maxlen=self.WINDOW)
        self.warned = False

    @staticmethod
    def is_tie(loss_plus: float, loss_minus: float) -> bool:
        """Whether two losses are equal to within 4 fp32 units in the last place of the larger."""
        size = max(abs(loss_plus), abs(loss_minus))
        return abs(loss_plus - loss_minus) <= 4 * torch.finfo(torch.float32).eps * size

    @property
    def share(self) -> float:
        """Ties over the recent steps (0 before the first)."""
        return sum(self.recent) / len(self.recent) if self.recent else 0.0

    @staticmethod
    def loss_pairs(estimates: Sequence[DirectionalEstimate]) -> list[tuple[float, float]]:
        """(L+, L−) of each direction, or (L+, L(θ)) for one-sided ones; none for the forward gradient."""
        pairs = []
        for estimate in estimates:
            other = estimate.loss_minus if estimate.loss_minus is not None else estimate.loss_center
            if estimate.loss_plus is not None and other is not None:
                pairs.append((float(estimate.loss_plus), float(other)))
        return pairs

    def observe(self, estimates: Sequence[DirectionalEstimate], eps: float) -> None:
        """Take one step's estimates; the step ties when every direction's two losses do."""
        pairs = self.loss_pairs(estimates)
        if not pairs:
            return
        self.recent.append(all(self.is_tie(plus, minus) for plus, minus in pairs))
        if (self.threshold is None or self.warned or len(self.recent) < self.WINDOW
                or self.share < self.threshold):
            return
        self.warned = True
        if collectives.rank() == 0:
            warnings.warn(self.message(eps), UserWarning, stacklevel=2)

    def message(self, eps: float) -> str:
        return (
            f"{self.share:.0%} of the last {self.WINDOW} ZO steps measured L+ = L- (to within fp32 rounding), so "
            "their estimate was 0 and they moved nothing. The objective does not see a perturbation of eps = "
            f"{eps:g}: either it is piecewise constant (an accuracy or error rate over a batch of B examples moves "
            "in steps of 1/B: use a larger batch, a larger eps, or a smoothed objective), or rounding erases the "
            "perturbation (half-precision weights or losses: raise eps, or compute the loss in fp32). The share is "
            "logged as `train/tie_share`."
        )

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "warned": self.warned}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.recent = deque((bool(v) for v in state.get("recent", [])), maxlen=self.WINDOW)
        self.warned = bool(state.get("warned", False))
