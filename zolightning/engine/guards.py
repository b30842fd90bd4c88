"""Checks on each update's losses: non-finite steps are skipped (and stop a run after too many), and a loss that runs
away from its best value stops the run with an error that names the learning rate."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

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
