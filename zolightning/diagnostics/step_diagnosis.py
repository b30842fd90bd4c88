"""One diagnostic measurement of a ZO step: its estimate against the true gradient, the subspace alignment, the
estimate's variance and the projected gradient's signal-to-noise ratio, on a fixed probe batch.

Cost of one measurement (on the steps it runs, none on the others):

- 2·M forwards, M = the step's q directions + ``extra_directions``, with a snapshot of the plan's tensors (an exact
  restore; the plan's size in memory while it runs);
- with ``gradient=True``, one forward and one backward on the probe batch: the trainable parameters' size for the
  gradient plus the backward's activations. It is skipped, with the reason, when that would not fit
  (:func:`gradient_memory_shortfall`) or when the backward runs out of memory;
- one pass of noise over the plan per direction (the step itself draws the same amount twice).

The weights are bitwise what they were afterwards: the probe restores from its snapshot in a ``finally``, and the
backward only reads them (``torch.autograd.grad``, which writes no ``.grad`` and fires no data-parallel hook).

Sharded weights (FSDP2): the forwards are collective, so every rank measures, each on its own probe batch, and the
numbers are those of the global batch, as the step's are: the losses are averaged over ranks, and the Gram matrix,
the projections onto the true gradient and the norms are sums of each rank's shards, added over ranks in one
all-reduce. The true gradient comes from FSDP2's own backward (``loss.backward()``: its reduce-scatter averages the
ranks' gradients into each shard's ``.grad``, which ``torch.autograd.grad`` cannot reach through the all-gather);
every ``.grad`` is put back as it was, in a ``finally``. Every rank takes the backward, or none does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from zolightning.engine import collectives
from zolightning.engine.probe import Probe
from zolightning.engine.shards import is_sharded, local_part
from zolightning.engine.step import StepEngine
from zolightning.functional.diagnostics import EstimateStatistics, estimate_statistics, gram_update_, stacked_norm_sq
from zolightning.functional.estimate import LossFn
from zolightning.functional.noise import mix_seed
from zolightning.functional.perturbation import PerturbationPlan
from zolightning.structures.base import TrainableTensor

_DIAGNOSTIC_STREAM = 0x44494147  # extra directions never coincide with a training step's


@dataclass(frozen=True)
class StepDiagnosis:
    """One step's diagnostics.

    Attributes:
        step: the step whose plan and seeds were measured.
        statistics: see :class:`~zolightning.functional.diagnostics.EstimateStatistics`.
        active_names: the plan's parameter names.
        forwards: objective evaluations spent (2·M, +1 with the gradient).
        seconds: wall time of the measurement.
        gradient_skipped: why the true gradient was not computed (``None`` when it was).
    """

    step: int
    statistics: EstimateStatistics
    active_names: tuple[str, ...]
    forwards: int
    seconds: float
    gradient_skipped: str | None = None


def diagnostic_seeds(engine: StepEngine, step: int, extra: int) -> list[int]:
    """The step's own q seeds, then ``extra`` seeds from a stream of their own."""
    return engine.seeds(step) + [mix_seed(engine.config.seed, _DIAGNOSTIC_STREAM, step, k) for k in range(extra)]


def trainable_of(engine: StepEngine) -> list[TrainableTensor]:
    """Every tensor the engine's update target trains, by name."""
    if engine.target is None:
        raise RuntimeError("The engine has no update attached yet: measure after `on_fit_start` (or `engine.attach`).")
    return engine.trainable()


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: CUDA's free memory, or the host's available memory on Linux; ``None`` if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            return None
    return None


def gradient_memory_shortfall(tensors: Sequence[TrainableTensor], headroom: float = 3.0) -> str | None:
    """Why a backward would not fit, or ``None``: it needs the gradient (the trainable size) and, as a rough rule,
    as much again twice over for the backward's activations and temporaries (``headroom``× in all)."""
    if not tensors:
        return "there are no trainable parameters"
    need = int(headroom * sum(local_part(t.param).numel() * t.param.element_size() for t in tensors))
    free = available_memory(tensors[0].param.device)
    if free is not None and need > free:
        return f"the backward needs about {need / 2**20:.0f} MiB and {free / 2**20:.0f} MiB are free"
    return None


def true_gradient(objective: LossFn, tensors: Sequence[TrainableTensor]) -> tuple[list[Tensor] | None, str | None]:
    """∇L of ``objective`` for each tensor (zeros for tensors the loss does not reach; this rank's shard of a sharded
    one), or ``None`` and the reason."""
    shortfall = gradient_memory_shortfall(tensors)
    if any(is_sharded(t.param) for t in tensors):
        # FSDP2's backward is collective: every rank takes it, or none does.
        short_anywhere = bool(collectives.sum_over_ranks(torch.tensor([float(shortfall is not None)])).item())
        if short_anywhere:
            return None, shortfall or "another rank lacks the memory for the backward"
        return _sharded_gradient(objective, tensors)
    if shortfall is not None:
        return None, shortfall
    params = [t.param for t in tensors]
    try:
        with torch.enable_grad():
            loss = objective()
            if not loss.requires_grad:
                return None, "the loss does not depend on the trainable parameters through autograd"
            grads = torch.autograd.grad(loss, params, allow_unused=True)
    except torch.OutOfMemoryError as error:
        return None, f"the backward ran out of memory ({str(error).splitlines()[0]})"
    return [g.detach() if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)], None


def _sharded_gradient(objective: LossFn, tensors: Sequence[TrainableTensor]) -> tuple[list[Tensor] | None, str | None]:
    """∇L through FSDP2's backward: each shard's ``.grad``, the mean of the ranks' gradients (see the module
    docstring), copied out; every ``.grad`` is then put back as it was."""
    params = [t.param for t in tensors]
    saved = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        with torch.enable_grad():
            loss = objective()
            if not loss.requires_grad:  # the same graph on every rank: all return here, or none does
                return None, "the loss does not depend on the trainable parameters through autograd"
            loss.backward()
        return [
            local_part(p.grad).detach().clone() if p.grad is not None else torch.zeros_like(local_part(p))
            for p in params
        ], None
    finally:
        for p, grad in zip(params, saved):
            p.grad = grad


def measure_step(
    engine: StepEngine, objective: LossFn, step: int, *, extra_directions: int = 4, gradient: bool = True
) -> StepDiagnosis:
    """Diagnose step ``step`` of ``engine`` on the batch ``objective`` evaluates (see the module docstring)."""
    started = time.perf_counter()
    plan = engine.plan(step)
    seeds = diagnostic_seeds(engine, step, extra_directions)
    tensors = trainable_of(engine)
    sharded = any(is_sharded(t.param) for t in tensors)
    projected = _projected_gradients(objective, plan, seeds, sharded)
    forwards = 2 * len(seeds)
    grads, skipped = true_gradient(objective, tensors) if gradient else (None, "turned off (`gradient=False`)")
    forwards += 1 if grads is not None else 0
    by_name = {t.name: g for t, g in zip(tensors, grads)} if grads is not None else None
    gram, true_projected, subspace = _noise_pass(plan, seeds, by_name)
    gradient_norm_sq = stacked_norm_sq(list(grads)) if grads is not None else None
    if sharded:
        gram, true_projected, subspace, gradient_norm_sq = _summed_over_ranks(
            gram, true_projected, subspace, gradient_norm_sq
        )
    statistics = estimate_statistics(
        projected,
        gram,
        step_directions=len(engine.seeds(step)),
        true_projected=true_projected,
        gradient_norm_sq=gradient_norm_sq,
        subspace_norm_sq=subspace,
    )
    names = tuple(entry.name for entry in plan)
    return StepDiagnosis(step, statistics, names, forwards, time.perf_counter() - started, skipped)


def _projected_gradients(objective: LossFn, plan: PerturbationPlan, seeds: Sequence[int], sharded: bool) -> Tensor:
    """p̂ for each seed, central differences at the plan's ε, restored exactly from a snapshot; with ``sharded``, of
    the losses averaged over ranks (as the step averages them)."""
    probe = Probe(objective, plan, "snapshot")
    eps = plan[0].eps
    losses = []
    try:
        for seed in seeds:
            losses.append(torch.stack([probe.loss_at(seed, +1.0), probe.loss_at(seed, -1.0)]).detach())
    finally:
        probe.restore()
    pairs = torch.stack(losses)  # (M, 2): L+ and L− per seed
    if sharded:
        pairs = collectives.mean_over_ranks(pairs)
    return (pairs[:, 0].double() - pairs[:, 1].double()) / (2 * eps)


def _summed_over_ranks(
    gram: Tensor, true_projected: Tensor | None, subspace: float | None, gradient_norm_sq: Tensor | float | None
) -> tuple[Tensor, Tensor | None, float | None, float | None]:
    """Each rank's partial sums over its shards, added over ranks in one fp64 all-reduce (``None`` stays ``None``:
    every rank has the same plan, so the same ones are missing)."""
    parts = [gram.reshape(-1), true_projected, subspace, gradient_norm_sq]
    flat = [torch.as_tensor(part, dtype=torch.float64).reshape(-1) for part in parts if part is not None]
    total = collectives.sum_over_ranks(torch.cat(flat)).split([piece.numel() for piece in flat])
    pieces = iter(total)
    summed = [next(pieces) if part is not None else None for part in parts]
    gram_total = summed[0].reshape(gram.shape)
    scalar = [float(value.item()) if value is not None else None for value in summed[2:]]
    return gram_total, summed[1], scalar[0], scalar[1]


def _noise_pass(
    plan: PerturbationPlan, seeds: Sequence[int], gradient: dict[str, Tensor] | None
) -> tuple[Tensor, Tensor | None, float | None]:
    """G, t and ‖P·g‖² in one pass over the plan, one tensor's M directions at a time.

    The effective direction of tensor e is (εₑ/ε₀)·zₑ: that is what a perturbation with per-group ε moves along,
    measured in units of the first tensor's ε (which p̂ divides by).
    """
    gram = torch.zeros(len(seeds), len(seeds), dtype=torch.float64)
    true_projected = torch.zeros(len(seeds), dtype=torch.float64) if gradient is not None else None
    subspace: float | None = 0.0 if gradient is not None else None
    eps = plan[0].eps
    for entry in plan:
        directions = torch.stack([entry.direction_at(seed) for seed in seeds]).mul_(entry.eps / eps)
        gram_update_(gram, directions)
        if gradient is None or true_projected is None:
            continue
        grad = gradient[entry.name].float()
        true_projected += (directions.reshape(len(seeds), -1) @ grad.reshape(-1)).double().cpu()
        energy = entry.direction.subspace_energy(grad) if subspace is not None else None
        subspace = subspace + float(energy) if subspace is not None and energy is not None else None
    return gram, true_projected, subspace
