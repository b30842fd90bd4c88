"""Confirm a proposed learning rate with real steps, and back off until they lower the loss.

The finder's one-step range test (:mod:`~zolightning.diagnostics.finder`) sees the loss around the initial weights
only. A run takes many steps, along many directions, and an lr that one step tolerates can still make a run climb
(on a user's MLP the one-step proposal trained into divergence). So before a proposal is applied, this trains
``steps`` real steps at it (the step the fit will take, ``update.apply(engine.measure(objective))``: the same
optimizer, structure and lr scales),
and accepts it only if the loss on held-out batches ends clearly below where it started (by 0.1%), with no non-finite step and no
divergence stop. Otherwise the lr is halved and the steps are tried again, from the same weights.

Everything is put back afterwards: the trainable weights bitwise (from a copy taken first), the optimizer's state,
the engine's counters and guards and the structure's state, in a ``finally``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from zolightning.engine.measurement import Update
from zolightning.engine.step import StepEngine
from zolightning.functional.estimate import LossFn

__all__ = ["Confirmation", "confirm_lr"]


@dataclass
class Confirmation:
    """What the real steps showed.

    Attributes:
        lr: the largest lr tried whose steps lowered the held-out loss (``None`` if none did).
        tried: (lr, held-out loss before, after) for every lr tried, in order; ``after`` is ``inf`` for a run that
            hit a non-finite loss or the divergence stop.
    """

    lr: float | None
    tried: list[tuple[float, float, float]] = field(default_factory=list)

    def summary(self) -> str:
        """One line per lr tried."""
        return "; ".join(f"lr {lr:.2e}: held-out loss {before:.4g} -> {after:.4g}" for lr, before, after in self.tried)


def confirm_lr(
    engine: StepEngine,
    update: Update,
    objective_for: Callable[[int], LossFn],
    lr: float,
    *,
    train: Sequence[int],
    judge: Sequence[int],
    steps: int = 20,
    backoffs: int = 4,
    factor: float = 0.5,
    agree: Callable[[bool], bool] = bool,
    tolerance: float = 1e-3,
) -> Confirmation:
    """Train ``steps`` real steps at ``lr`` (cycling through the ``train`` objectives), compare the mean loss of the
    ``judge`` objectives before and after, and multiply lr by ``factor`` up to ``backoffs`` times until it falls.

    Args:
        engine: the engine, with ``update``'s target attached.
        update: the update the fit applies (a ZO optimizer, or ``GradientUpdate`` around a torch one); its groups keep
            their lr ratios (the first group is set to ``lr``).
        objective_for: index → an objective on one batch.
        train: the indices of the batches the steps train on.
        judge: the indices of the batches the loss is judged on (others than ``train``, so a step that only fits
            its own batch does not count).
        steps: real steps per lr tried (default 20).
        backoffs: how many times the lr may be lowered (default 4: down to 1/16 of the proposal).
        factor: the back-off multiplier (default 0.5).
        tolerance: the relative fall of the held-out loss that counts (default 1e-3: a proposal that only moves the
            loss in its fourth digit is noise, not a rate that trains).
        agree: turns this process's verdict into the one every process acts on (under data parallelism, rank 0's
            broadcast, so that all ranks take the same number of steps; default: its own).
    """
    groups = update.target().optimizer.param_groups
    params = [p for group in groups for p in group["params"]]
    weights = [p.detach().clone() for p in params]
    optimizer_state = copy.deepcopy(update.state_dict())
    engine_state = copy.deepcopy(engine.state_dict())
    base = [float(group["lr"]) for group in groups]
    ratios = [b / base[0] if base[0] else 1.0 for b in base]

    def judged() -> float:
        with torch.no_grad():
            return sum(float(objective_for(j)()) for j in judge) / len(judge)

    result = Confirmation(None)
    try:
        before = judged()
        candidate = lr
        for _ in range(backoffs + 1):
            for group, ratio in zip(update.target().optimizer.param_groups, ratios):
                group["lr"] = candidate * ratio
            after = _train(engine, update, objective_for, train, steps)
            after = judged() if after else float("inf")
            result.tried.append((candidate, before, after))
            _restore(params, weights, update, optimizer_state, engine, engine_state)
            if agree(before - after > tolerance * abs(before)):
                result.lr = candidate
                break
            candidate *= factor
    finally:
        _restore(params, weights, update, optimizer_state, engine, engine_state)
        for group, value in zip(update.target().optimizer.param_groups, base):
            group["lr"] = value
    return result


def _train(engine: StepEngine, update: Update, objective_for: Callable[[int], LossFn], train: Sequence[int],
           steps: int) -> bool:
    """``steps`` real steps; ``False`` if a loss was not finite or the divergence guard stopped them."""
    for k in range(steps):
        try:
            update.apply(engine.measure(objective_for(train[k % len(train)]), k, defer_restore=True))
        except FloatingPointError:  # the engine's non-finite streak or divergence stop
            return False
        last = engine.last
        if last is None or not last.updates or not torch.isfinite(last.loss):
            return False
    return True


def _restore(
    params: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], update: Update, optimizer_state: dict,
    engine: StepEngine, engine_state: dict,
) -> None:
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w)
    update.load_state_dict(copy.deepcopy(optimizer_state))
    engine.load_state_dict(copy.deepcopy(engine_state))
