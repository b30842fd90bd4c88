"""A learning-rate and ε finder for ZO-SGD: short, measured range tests instead of a grid search.

**ε.** Along a few fixed directions, the projected gradient p̂(ε) = (L(θ + εz) − L(θ − εz)) / 2ε is measured on a
grid of ε. Where ε is too small, rounding in the weights and the loss makes p̂ jump (half precision first); where it
is too large, curvature bends it. In between p̂ does not depend on ε: the *stable range*, where neighbouring ε agree
within ``tolerance``. Only the first failure loses the signal: above the range, p̂ is the gradient of the loss
smoothed over a ball of radius ~ε·‖z‖, which is what MeZO trains on at its ε = 1e-3 (on SmolLM2-135M with every
weight perturbed, p̂ at 1e-3 and at 3e-4 differ by a third, and the recipe trains). So the proposal raises ε to the
range's lower end when the configured ε lies below it (rounding: half precision, tiny adapter weights), and otherwise
keeps it, saying where it lies.

**Learning rate.** A ZO-SGD step moves θ by −lr·p̂·z. For each trial (a direction, p̂ measured on one batch), the
loss after that move is measured on *another* batch for every lr of a log grid, always from the same θ:
ΔL(lr) = L'(θ − lr·p̂·z) − L'(θ). Judged on its own batch, a step along that batch's estimate always looks good;
judged on another, it pays for the gradient noise between batches, as training does. On a quadratic
ΔL(lr) = lr·p̂²·(−1 + lr·zᵀHz/2): it falls fastest at lr = 1/(zᵀHz) and turns positive at twice that. Because
zᵀHz ≈ tr H for random z, this is ZO-SGD's own scale (for H = λI in d dimensions, 1/(λd) and 2/(λd), against the
expected-descent optimum 1/(λ(d + 2)) and stability limit 2/(λ(d + 2))), far below backprop's 1/λ.

``lr_best_step`` is the lr of the lowest mean ΔL over the trials, within the first stretch of lrs that lower the
loss, and ``lr_stable`` is where that stretch ends. The proposal is the point where the loss falls fastest per
log-lr, as Lightning's ``lr_find`` suggests on its own curve: d ΔL / d log lr is most negative at half the one-step
optimum. One step from the initial weights can still tolerate more than a run does: on SmolLM2-135M with every
weight or a prefix trained, the proposal was 4–15× the recipes' rates, and training at it failed (README,
"ZOLearningRateFinder").

The weights come back bitwise: every move is undone from a snapshot of the plan's tensors, in a ``finally``.
The finder models ZO-SGD's update (``ZOSGD``, or a plain ``torch.optim.SGD`` fed by ZO); for sign and Adam updates
its lr is not their scale, and the explanation says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from zolightning.engine.probe import Probe
from zolightning.engine.step import StepEngine
from zolightning.functional.precision_eps import compute_dtype, half_precision_eps
from zolightning.functional.estimate import LossFn, evaluate_loss
from zolightning.functional.noise import mix_seed
from zolightning.functional.perturbation import PerturbationPlan, move_, restore_, snapshot

_FINDER_STREAM = 0x46494E44


@dataclass
class FinderResult:
    """What the finder measured and proposes.

    Attributes:
        lr: the proposed learning rate, ``lr_best_step / 2`` (``None`` if no lr lowered the loss).
        lr_best_step: the lr of the largest mean one-step descent.
        lr_stable: the largest lr whose mean one-step loss change is still negative (``None`` if none was).
        eps: the proposed ε (``None`` when ε was not searched).
        eps_range: (smallest, largest) ε of the stable range (``None`` if there is none).
        lr_curve: (lr, mean ΔL over trials) for every lr tried, ascending.
        eps_curve: (ε, median relative disagreement of p̂ with the next larger ε), ascending.
        current_lr, current_eps: the optimizer's settings when the finder ran.
        trial_best_lrs: each trial's own best grid lr, on its own curve: the spread says how much one batch and
            one direction move the answer (more ``trials`` narrow the mean's).
        explanation: why, in a few lines (printed by the callback).
    """

    lr: float | None
    lr_best_step: float | None
    lr_stable: float | None
    eps: float | None
    eps_range: tuple[float, float] | None
    lr_curve: list[tuple[float, float]] = field(default_factory=list)
    eps_curve: list[tuple[float, float]] = field(default_factory=list)
    current_lr: float = 0.0
    current_eps: float = 0.0
    trial_best_lrs: list[float] = field(default_factory=list)
    explanation: str = ""


def log_grid(low: float, high: float, per_decade: int) -> list[float]:
    """``per_decade`` points per decade from ``low`` to ``high`` inclusive (log-spaced)."""
    if not 0 < low < high:
        raise ValueError(f"a range must satisfy 0 < low < high, got ({low}, {high}).")
    count = max(1, round(math.log10(high / low) * per_decade))
    return [low * (high / low) ** (i / count) for i in range(count + 1)]


def find_lr_and_eps(
    engine: StepEngine,
    objective_for: Callable[[int], LossFn],
    *,
    trials: int = 4,
    lr_range: tuple[float, float] = (1e-8, 1.0),
    eps_range: tuple[float, float] | None = (1e-5, 1e-1),
    tolerance: float = 0.1,
) -> FinderResult:
    """Run the range tests on ``engine``'s model (its optimizer must be bound) and propose lr and ε.

    Args:
        engine: the step engine; its plan (structure, ε, lr scales) is the one measured, at steps 0 … trials − 1.
        objective_for: index → an objective on a batch: trial t estimates on ``t`` and is judged on ``t + trials``;
            give 2·``trials`` different batches (cycle through fewer, and a step is judged on its own batch).
        trials: batches × directions averaged (default 4); each costs 2 + about 17 forwards for the lr and, when ε is
            searched, 2 per ε (9 by default) on the first two trials.
        lr_range: lrs tried: one per decade, then four per decade around the best (default 1e-8 … 1).
        eps_range: ε tried, two per decade (default 1e-5 … 1e-1), from the floor of a half-precision forward
            (bf16 2⁻⁸, fp16 2⁻¹¹) where one runs; ``None`` keeps the optimizer's ε.
        tolerance: relative disagreement of p̂ between neighbouring ε that still counts as stable (default 0.1).
    """
    if engine.target is None:
        raise RuntimeError("The engine has no update attached: run the finder after `on_fit_start` or `engine.attach`.")
    optimizer = engine.target.optimizer
    current_lr = float(optimizer.param_groups[0]["lr"])
    plans = [engine.plan(t) for t in range(trials)]
    current_eps = plans[0][0].eps
    seeds = [mix_seed(engine.config.seed, _FINDER_STREAM, t) for t in range(trials)]
    eps, eps_range_found, eps_curve = current_eps, None, []
    if eps_range is not None:
        # The engine raises a half-precision forward's ε to its floor (`functional/precision_eps.py`): below it, a
        # p̂ is rounding residue, and two such residues can agree by chance.
        floor = max(
            half_precision_eps(0.0, compute_dtype(e.param.dtype, e.param.device.type), e.param.dtype) for e in plans[0]
        )
        grid = [e for e in log_grid(*eps_range, 2) if e >= floor]
        eps_curve, eps_range_found = _eps_test(plans[:2], seeds, objective_for, grid, tolerance)
        if eps_range_found is not None and current_eps < eps_range_found[0]:
            eps = eps_range_found[0]
    scale = eps / current_eps
    lr_curve, noise, trial_bests = _lr_test(plans, seeds, objective_for, scale, lr_range)
    lr_best_step, lr_stable = fit_descent_curve(lr_curve, noise)
    lr = lr_best_step / 2 if lr_best_step is not None else None
    result = FinderResult(
        lr, lr_best_step, lr_stable, eps if eps_range is not None else None, eps_range_found, lr_curve, eps_curve,
        current_lr, current_eps, trial_bests,
    )
    # A plain torch optimizer fed by ZO is named by its own class: SGD takes ZO-SGD's step, Adam does not.
    result.explanation = explain(result, lr_range, type(optimizer).__name__)
    return result


def sgd_lr_factor(optimizer: object) -> float | None:
    """What turns a ZO-SGD lr into ``optimizer``'s: 1 − momentum for ZO-SGD, ZO-SGD-Cons and a plain
    ``torch.optim.SGD`` fed by ZO (momentum μ multiplies the long-run step by 1/(1 − μ)); ``None`` for updates on
    another scale (sign, Adam, HiZOO's preconditioning, any other torch optimizer), whose lr a ZO-SGD proposal does
    not translate to."""
    if type(optimizer).__name__ not in ("ZOSGD", "ZOSGDCons", "SGD"):
        return None
    groups = getattr(optimizer, "param_groups", [{}])
    return 1.0 - float(groups[0].get("momentum", 0.0) or 0.0)


def first_bowl(curve: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points from the first lr that lowers the loss up to (not including) the first lr after it that does not.

    Past the first lr where one step raises the loss, the step has left the region the local model describes, and a
    lower loss further out is a lucky jump of one trial, not a better rate.
    """
    points = sorted(curve)
    start = next((i for i, (_, y) in enumerate(points) if y < 0), None)
    if start is None:
        return []
    end = next((i for i in range(start, len(points)) if not points[i][1] < 0), len(points))
    return points[start:end]


def fit_descent_curve(curve: Sequence[tuple[float, float]], noise: float = 0.0) -> tuple[float | None, float | None]:
    """The lr of the largest mean descent, and where the descent turns into ascent, from (lr, ΔL) points.

    Near its minimum ΔL(lr) ≈ −a·lr + b·lr² (exact on a quadratic, and ΔL(0) = 0), so a least-squares fit of a and b
    on the points within 4× of the best grid point gives the optimum a/2b and the zero crossing a/b between grid
    points; where the fit is not a descent bowl, the best grid point (and the last negative point after it) stand.
    A descent no larger than 3× ``noise`` (the loss's own repeat-evaluation noise) counts as none.
    """
    bowl = first_bowl(curve)
    if not bowl:
        return None, None
    best_lr, best_change = min(bowl, key=lambda point: point[1])
    if not best_change < -3 * noise:
        return None, None
    stable = bowl[-1][0]
    near = [(x, y) for x, y in curve if best_lr / 4 <= x <= best_lr * 4 and math.isfinite(y)]
    if len(near) >= 3:
        design = torch.tensor([[x, x * x] for x, _ in near], dtype=torch.float64)
        target = torch.tensor([y for _, y in near], dtype=torch.float64)
        a, b = (-torch.linalg.lstsq(design, target.unsqueeze(1)).solution.squeeze(1) * torch.tensor([1.0, -1.0])).tolist()
        if a > 0 and b > 0 and best_lr / 2 <= a / (2 * b) <= best_lr * 2:
            return a / (2 * b), a / b
    return best_lr, stable


def _eps_test(
    plans: Sequence[PerturbationPlan], seeds: Sequence[int], objective_for: Callable[[int], LossFn],
    grid: Sequence[float], tolerance: float,
) -> tuple[list[tuple[float, float]], tuple[float, float] | None]:
    """p̂(ε) along each trial's direction; the median relative disagreement between neighbouring ε; the stable range."""
    estimates = torch.zeros(len(plans), len(grid), dtype=torch.float64)
    for t, plan in enumerate(plans):
        base = plan[0].eps
        probe = Probe(objective_for(t), plan, "snapshot")
        try:
            for j, eps in enumerate(grid):
                plus = probe.loss_at(seeds[t], eps / base)
                minus = probe.loss_at(seeds[t], -eps / base)
                estimates[t, j] = (plus.double() - minus.double()) / (2 * eps)
        finally:
            probe.restore()
    gaps = (estimates[:, 1:] - estimates[:, :-1]).abs()
    sizes = torch.maximum(estimates[:, 1:].abs(), estimates[:, :-1].abs())
    # Two zeros agree only because ε was lost to rounding (θ + εz == θ): no signal, not stability.
    disagreement = torch.where(sizes > 0, gaps / sizes.clamp(min=1e-300), torch.inf).median(dim=0).values
    curve = [(grid[j], float(disagreement[j])) for j in range(len(grid) - 1)]
    stable_pairs = [j for j, (_, d) in enumerate(curve) if d <= tolerance]
    if not stable_pairs:
        return curve, None
    # The longest run of consecutive agreeing pairs: ε from its first pair's lower end to its last pair's upper end.
    runs: list[list[int]] = []
    for j in stable_pairs:
        if runs and runs[-1][-1] == j - 1:
            runs[-1].append(j)
        else:
            runs.append([j])
    run = max(runs, key=len)
    return curve, (grid[run[0]], grid[run[-1] + 1])


def _lr_test(
    plans: Sequence[PerturbationPlan], seeds: Sequence[int], objective_for: Callable[[int], LossFn],
    eps_scale: float, lr_range: tuple[float, float],
) -> tuple[list[tuple[float, float]], float]:
    """Mean over trials of ΔL(lr) for a coarse grid, then a finer one around its best point; and the mean difference
    between two evaluations of L(θ) on the same batch (0 for a deterministic objective; dropout makes it positive)."""
    trials: list[tuple[PerturbationPlan, LossFn, float, float]] = []
    noise: list[float] = []
    for t, plan in enumerate(plans):
        # The estimate comes from trial t's batch and the step is judged on another one (trial t + T's): a step along
        # a batch's own estimate always looks good on that batch, and the gradient noise between batches, which
        # training pays for, would go unseen.
        probe = Probe(objective_for(t), plan, "snapshot")
        base = plan[0].eps
        try:
            plus = probe.loss_at(seeds[t], eps_scale)
            minus = probe.loss_at(seeds[t], -eps_scale)
        finally:
            probe.restore()
        judge = objective_for(t + len(plans))
        start, again = float(evaluate_loss(judge)), float(evaluate_loss(judge))
        noise.append(abs(again - start))
        trials.append((plan, judge, start, float(plus.double() - minus.double()) / (2 * base * eps_scale)))
    changes: dict[float, float] = {}
    per_trial: dict[float, list[float]] = {}

    def measure(lrs: Sequence[float]) -> None:
        for lr in lrs:
            if lr not in changes:
                per_trial[lr] = [
                    _loss_after(plan, seeds[t], objective, g, lr) - start
                    for t, (plan, objective, start, g) in enumerate(trials)
                ]
                changes[lr] = sum(per_trial[lr]) / len(trials)

    measure(log_grid(*lr_range, 1))
    bowl = first_bowl(list(changes.items()))
    best = min(bowl, key=lambda point: point[1])[0] if bowl else min(changes, key=changes.__getitem__)
    low, high = max(best / 10, lr_range[0]), min(best * 10, lr_range[1])
    if low < high:
        measure(log_grid(low, high, 4))
    bests = []
    for t in range(len(trials)):
        own = first_bowl([(lr, values[t]) for lr, values in per_trial.items()])
        if own:
            bests.append(min(own, key=lambda point: point[1])[0])
    return sorted(changes.items()), sum(noise) / len(noise), bests


def _loss_after(plan: PerturbationPlan, seed: int, objective: LossFn, projected: float, lr: float) -> float:
    """L(θ − lr·scaleₑ·gₑ·z), with gₑ = p̂·ε₀/εₑ per tensor as the engine's update applies it; θ restored."""
    saved = snapshot(plan)
    try:
        base = plan[0].eps
        move_(plan, seed, [-lr * entry.lr_scale * projected * base / entry.eps for entry in plan])
        after = float(evaluate_loss(objective))
    finally:
        restore_(plan, saved)
    return after if math.isfinite(after) else math.inf


def explain(result: FinderResult, lr_range: tuple[float, float], optimizer: str) -> str:
    """A few lines on what was measured and why the proposal is what it is."""
    lines = []
    if result.eps is not None:
        if result.eps_range is None:
            lines.append(
                f"eps: no two neighbouring eps agreed on the projected gradient (median disagreement "
                f"{min(d for _, d in result.eps_curve):.0%} at best): rounding or curvature dominates everywhere. "
                "Use fp32 weights or a larger batch, and keep eps at its current value."
            )
        else:
            low, high = result.eps_range
            where = "inside" if low <= result.current_eps <= high else "below" if result.current_eps < low else "above"
            verdict = {
                "inside": "keep it.",
                "below": f"rounding swamps the signal there: use eps = {result.eps:.3g}.",
                "above": "there p̂ is the gradient of the loss smoothed over the perturbation (curvature bends it), as "
                "in MeZO's own runs: keep it, or lower it into the range to follow the raw gradient.",
            }[where]
            lines.append(
                f"eps: the projected gradient does not depend on eps between {low:.1e} and {high:.1e} (neighbours "
                f"agree within tolerance); the current {result.current_eps:.3g} is {where} that range: {verdict}"
            )
    if result.lr is None:
        lines.append(
            f"lr: no learning rate in [{lr_range[0]:.0e}, {lr_range[1]:.0e}] lowered the loss on average: the "
            "projected gradients are mostly noise here. Raise eps or the batch size, or check the objective."
        )
    else:
        assert result.lr_best_step is not None
        edge = " That is the top of the range tried: widen `lr_range`." if result.lr_best_step >= lr_range[1] * 0.99 else ""
        stable = f"; the loss change turns positive above {result.lr_stable:.2e}" if result.lr_stable else ""
        if len(result.trial_best_lrs) > 1:
            stable += (
                f" (single trials: best at {min(result.trial_best_lrs):.1e} to {max(result.trial_best_lrs):.1e}; "
                "more `trials` narrow the mean)"
            )
        lines.append(
            f"lr: one ZO-SGD step lowers the loss most at lr = {result.lr_best_step:.2e} on average over the "
            f"trials{stable}.{edge} Proposed lr = {result.lr:.2e}, half of that, where the loss falls fastest per "
            f"log-lr (configured: {result.current_lr:.3g})."
        )
    if optimizer not in ("ZOSGD", "SGD"):
        lines.append(f"Note: the lr is ZO-SGD's scale; {optimizer} scales its steps differently.")
    return "\n".join(lines)
