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
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from zolightning.engine.probe import Probe
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
    need = int(headroom * sum(t.param.numel() * t.param.element_size() for t in tensors))
    free = available_memory(tensors[0].param.device)
    if free is not None and need > free:
        return f"the backward needs about {need / 2**20:.0f} MiB and {free / 2**20:.0f} MiB are free"
    return None


def true_gradient(objective: LossFn, tensors: Sequence[TrainableTensor]) -> tuple[list[Tensor] | None, str | None]:
    """∇L of ``objective`` for each tensor (zeros for tensors the loss does not reach), or ``None`` and the reason."""
    shortfall = gradient_memory_shortfall(tensors)
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


def measure_step(
    engine: StepEngine, objective: LossFn, step: int, *, extra_directions: int = 4, gradient: bool = True
) -> StepDiagnosis:
    """Diagnose step ``step`` of ``engine`` on the batch ``objective`` evaluates (see the module docstring)."""
    started = time.perf_counter()
    plan = engine.plan(step)
    seeds = diagnostic_seeds(engine, step, extra_directions)
    projected = _projected_gradients(objective, plan, seeds)
    forwards = 2 * len(seeds)
    tensors = trainable_of(engine)
    grads, skipped = true_gradient(objective, tensors) if gradient else (None, "turned off (`gradient=False`)")
    forwards += 1 if grads is not None else 0
    by_name = {t.name: g for t, g in zip(tensors, grads)} if grads is not None else None
    gram, true_projected, subspace = _noise_pass(plan, seeds, by_name)
    statistics = estimate_statistics(
        projected,
        gram,
        step_directions=len(engine.seeds(step)),
        true_projected=true_projected,
        gradient_norm_sq=stacked_norm_sq(list(grads)) if grads is not None else None,
        subspace_norm_sq=subspace,
    )
    names = tuple(entry.name for entry in plan)
    return StepDiagnosis(step, statistics, names, forwards, time.perf_counter() - started, skipped)


def _projected_gradients(objective: LossFn, plan: PerturbationPlan, seeds: Sequence[int]) -> Tensor:
    """p̂ for each seed, central differences at the plan's ε, restored exactly from a snapshot."""
    probe = Probe(objective, plan, "snapshot")
    eps = plan[0].eps
    values = []
    try:
        for seed in seeds:
            plus = probe.loss_at(seed, +1.0)
            minus = probe.loss_at(seed, -1.0)
            values.append((plus.double() - minus.double()) / (2 * eps))
    finally:
        probe.restore()
    return torch.stack(values)


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
