"""The plan of a step, from the update's target: which tensors, with which direction, ε and learning-rate scale.

Stage 2 of :meth:`~zolightning.engine.StepEngine.measure` (after the ε schedule has written each group's ε): the
target's trainable tensors with their group's ε, through the structure (selection, then each tensor's direction
rule), with ``zo.lr_scales``, then the target's preconditioner. Everything here reads the target as data.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import replace
from typing import Any, Literal

from zolightning.engine.measurement import UpdateTarget
from zolightning.engine.shards import with_local_shards
from zolightning.functional.hessian import PreconditionedDirection
from zolightning.functional.noise import NoiseSource
from zolightning.functional.lr_scaling import BY_BLOCK_SIZE, block_size_scale, regex_scale
from zolightning.functional.perturbation import ActiveTensor, PerturbationPlan
from zolightning.functional.rounding import FULL_PRECISION
from zolightning.functional.precision_eps import compute_dtype, half_precision_eps
from zolightning.structures.base import PerturbationStructure, TrainableTensor, trainable_tensors


def group_eps(group: Mapping[str, Any], target: UpdateTarget) -> float:
    """The ε of ``group``, under the target's key; an error naming the fix when the group has none."""
    if target.eps_key not in group:
        raise KeyError(
            f"A param group of {target.name} has no {target.eps_key!r} (its ε): give every group one (e.g. "
            f"`optimizer.param_groups[i][{target.eps_key!r}] = 1e-3`), or build the update after adding groups."
        )
    return float(group[target.eps_key])


def trainable_of(target: UpdateTarget, names: Mapping[int, str] | None) -> list[TrainableTensor]:
    """Every tensor the target trains (``requires_grad``), by name, with its group's ε as the groups hold it now."""
    return trainable_tensors(target.optimizer.param_groups, names, eps_of=lambda group: group_eps(group, target))


def plan_step(
    structure: PerturbationStructure, target: UpdateTarget, names: Mapping[int, str] | None, step: int,
    lr_scales: Mapping[str, float], scale_cache: MutableMapping[str, float], noise: NoiseSource = "counter",
) -> PerturbationPlan:
    """The plan of step ``step``.

    Args:
        structure: the selection and the direction rule.
        target: the update's groups (ε under its key), and its preconditioner's state key.
        names: ``id(param) → name`` (``None``: the groups' own names).
        lr_scales: ``zo.lr_scales`` (regexes and the ``by_block_size`` rule).
        scale_cache: name → regex multiplier, kept by the caller across steps (the names come back every step).
        noise: where every tensor's z comes from (``zo.noise``).
    """
    tensors = trainable_of(target, names)
    if not tensors:
        raise ValueError(
            "The optimizer has no trainable parameters (requires_grad=True), so ZO training has nothing to "
            "perturb. Unfreeze what should be trained, e.g. `module.requires_grad_(True)` or the head's parameters."
        )
    plan = with_local_shards(
        [_with_noise(_half_precision_floor(entry), noise) for entry in structure.plan(tensors, step)], noise
    )
    if lr_scales:
        block = 1.0
        if BY_BLOCK_SIZE in lr_scales:
            total = sum(t.param.numel() for t in tensors)
            active = sum(entry.param.numel() for entry in plan)
            block = lr_scales[BY_BLOCK_SIZE] * block_size_scale(active, total, structure.selection.block_sizes())
        for entry in plan:
            if entry.name not in scale_cache:
                scale_cache[entry.name] = regex_scale(lr_scales, entry.name)
        plan = [replace(entry, lr_scale=block * scale_cache[entry.name]) for entry in plan]
    return plan if target.preconditioner is None else preconditioned(plan, target)


def _with_noise(entry: ActiveTensor, noise: NoiseSource) -> ActiveTensor:
    """``entry`` drawing its z from ``noise`` (a copy only where it differs: the plan is built every step)."""
    return entry if entry.noise == noise else replace(entry, noise=noise)


def _half_precision_floor(entry: ActiveTensor) -> ActiveTensor:
    """``entry`` with ε raised to the floor of the dtype its forward computes in and of its own dtype (bf16: 2⁻⁸),
    where rounding would otherwise take most of the perturbation away
    (:mod:`~zolightning.functional.precision_eps`). Reads autocast's
    state, so under the Trainer (whose ``training_step`` runs inside the precision's autocast) ``bf16-mixed`` is
    seen; in a plain loop, step inside the autocast region for it to apply."""
    dtype = entry.param.dtype
    eps = half_precision_eps(entry.eps, compute_dtype(dtype, entry.param.device.type), dtype)
    return entry if eps == entry.eps else replace(entry, eps=eps)


def preconditioned(plan: PerturbationPlan, target: UpdateTarget) -> PerturbationPlan:
    """The plan with each direction shaped by the diagonal D that the target's optimizer keeps for its tensor
    (z = D^(−1/2)·u); a tensor with no D yet keeps its direction, which is D = 1 bitwise."""
    state, key = target.optimizer.state, target.preconditioner
    planned = []
    for entry in plan:
        # `get`, not `[]`: the state is a defaultdict, and reading must not add entries to the optimizer's state.
        diagonal = state.get(entry.param, {}).get(key) if key is not None else None
        direction = entry.direction if diagonal is None else PreconditionedDirection(entry.direction, diagonal)
        planned.append(replace(entry, direction=direction))
    return planned


def learning_rates(plan: PerturbationPlan, target: UpdateTarget) -> list[float]:
    """Each planned tensor's learning rate: its group's lr × its lr scale."""
    lr = {id(p): float(group["lr"]) for group in target.optimizer.param_groups for p in group["params"]}
    return [lr[id(entry.param)] * entry.lr_scale for entry in plan]


def restore_mode(
    requested: str, plan: PerturbationPlan, prefers_snapshot: bool, parallel: bool
) -> Literal["arithmetic", "snapshot"]:
    """How the plan's tensors come back after the forwards: ``zo.restore`` (``requested``), with ``auto`` resolved to a
    snapshot below fp32 or for a selection that prefers one (``prefers_snapshot``: one block at a time), else
    arithmetic. Under query parallelism (``parallel``) ranks perturb along different directions and +εz − εz rounds
    differently on each: only an exact restore keeps the replicas bitwise identical, so always a snapshot."""
    if parallel:
        return "snapshot"
    if requested == "auto":
        exact = all(entry.data.dtype in FULL_PRECISION for entry in plan)
        return "snapshot" if prefers_snapshot or not exact else "arithmetic"
    return requested  # type: ignore[return-value]
