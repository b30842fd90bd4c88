"""``replay``: apply a trajectory to the base weights and get the trained weights back, bitwise.

Replay is ``optimizer.apply(recorded)``: the run's engine (its config and structure rules) turns each record's
numbers into the step's :class:`~zolightning.engine.measurement.Measurement` (``measure`` with ``recorded=``, which
measures nothing), and the run's optimizer class applies it. The plan, the noise, an arithmetic restore's rounding,
stochastic rounding and the optimizer's state (momentum, Adam's moments, HiZOO's Hessian, ZO-SGD-Cons's choice) are
recomputed by the same code, so the weights come out bitwise equal to training's on the same device and dtype.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zolightning.engine.measurement import Measurement, Recorded
from zolightning.engine.step import StepEngine
from zolightning.optim.optimizer import ZOOptimizer
from zolightning.trajectory.format import StepRecord, Trajectory, TrajectoryError, read_trajectory, weights_fingerprint
from zolightning.trajectory.run_spec import build_step, plan_signature


@dataclass
class ReplayResult:
    """What :func:`replay` did.

    Attributes:
        engine, optimizer: the run's two calls, in the state after the last replayed step: continue training with
            ``optimizer.step(closure, step=steps)`` (the next step's seeds derive from ``steps``), under
            ``default_dtype(...)`` of the log's ``header["default_dtype"]`` when the run set one (``bf16-true``).
        steps: step records applied (the model is the run's model after that many updates).
        seconds: wall time of the replay (the fingerprint check excluded).
        verified: the step counts at which the replayed weights matched the run's logged weights fingerprint.
    """

    engine: StepEngine
    optimizer: ZOOptimizer
    steps: int
    seconds: float
    verified: list[int] = field(default_factory=list)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("inf")


def replay(module: nn.Module, log: str | Path | Trajectory, *, upto: int | None = None) -> ReplayResult:
    """Apply the trajectory ``log`` in place to ``module``, which must hold the run's base weights.

    Args:
        module: the model as it was before the first step (checked against the log's fingerprint).
        log: a ``.zot`` file (or one already read with :func:`~zolightning.trajectory.read_trajectory`).
        upto: stop after this many steps (default: every step; the model is then the run's at step ``upto``).

    Raises:
        TrajectoryError: a truncated or corrupted log, a newer format version, other base weights, other trainable
            dtypes, or a step that plans differently from the log (naming the step).
        ValueError: ``upto`` outside ``[0, number of steps]``.
    """
    trajectory = log if isinstance(log, Trajectory) else read_trajectory(log)
    header, records = trajectory.header, trajectory.steps
    upto = resolve_upto(upto, len(records))
    check_base(module, header)
    engine, optimizer = build_step(header, module)
    checkpoints = {record.steps: record.digest for record in trajectory.weights}
    world = int(header["world_size"])
    verified: list[int] = []
    started = time.perf_counter()
    with default_dtype(getattr(torch, header["default_dtype"].removeprefix("torch."))):
        for record in records[:upto]:
            apply_record(engine, optimizer, record, world)
            digest = checkpoints.get(record.step + 1)
            if digest is not None:
                if weights_fingerprint(module.named_parameters()) != digest:
                    raise TrajectoryError(f"After step {record.step} the replayed weights differ from the run's.")
                verified.append(record.step + 1)
    return ReplayResult(engine, optimizer, upto, time.perf_counter() - started, verified)


def resolve_upto(upto: int | None, available: int) -> int:
    """``upto`` checked against the log's ``available`` steps (``None``: all of them)."""
    if upto is None:
        return available
    if isinstance(upto, bool) or not isinstance(upto, int) or not 0 <= upto <= available:
        raise ValueError(f"`upto` must be an integer in [0, {available}] (the log's steps), got {upto!r}.")
    return upto


def check_base(module: nn.Module, header: Mapping[str, Any]) -> None:
    """Refuse a module that does not hold the log's base weights, or trains other dtypes; warn about another device.

    Raises:
        TrajectoryError: naming what differs and what to do.
    """
    dtypes = sorted({str(p.dtype) for p in module.parameters() if p.requires_grad})
    if dtypes != header["weights"]["dtypes"]:
        raise TrajectoryError(f"The run trained {header['weights']['dtypes']} weights, the module has {dtypes}: "
                              "bitwise replay needs the same dtype.")
    if weights_fingerprint(module.named_parameters()).hex() != header["base_fingerprint"]:
        raise TrajectoryError(
            "The module does not hold the log's base weights (their SHA-256 fingerprint differs): load the "
            "pretrained weights and seed the new layers as the run did before its first step."
        )
    device = next((str(p.device) for p in module.parameters() if p.requires_grad), "cpu")
    if device.split(":")[0] != str(header["weights"]["device"]).split(":")[0]:
        warnings.warn(f"The run trained on {header['weights']['device']}, the replay runs on {device}: the weights "
                      "will be close, not bitwise equal.", stacklevel=2)


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Run the block with torch's default dtype set to ``dtype`` (as Lightning's precision does inside a step)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def apply_record(engine: StepEngine, optimizer: ZOOptimizer, record: StepRecord, world: int) -> None:
    """Replay one step record: its learning rates and ε (as a user's edits, they are the step's), its accumulated
    micro-batches' moves, then ``optimizer.apply`` of the recorded measurement; then check that the step planned and
    applied what the log says."""
    groups = optimizer.param_groups
    if len(record.lr) != len(groups):
        raise TrajectoryError(f"Step {record.step} has {len(record.lr)} param groups; the optimizer has {len(groups)}.")
    for group, lr, eps in zip(groups, record.lr, record.eps, strict=True):
        group["lr"], group["eps"] = lr, eps
    recorded = Recorded(record.numbers, world)
    for _ in range(record.micro_batches - 1):
        engine.measure(None, record.step, accumulate=True, recorded=recorded)
    optimizer.apply(engine.measure(None, record.step, recorded=recorded, defer_restore=True))
    assert engine.last is not None
    problem = mismatch(engine, record, engine.last)
    if problem is not None:
        raise TrajectoryError(f"Step {record.step} does not replay as logged: {problem}.")


def last_update(engine: StepEngine) -> Measurement | None:
    """The engine's latest measurement if it was an update's (or a skipped non-finite update's); ``None`` after a
    micro-batch that only accumulated, whose numbers travel with the update's."""
    last = engine.last
    return last if last is not None and last.micro_batches > 0 else None


def mismatch(engine: StepEngine, record: StepRecord, result: Measurement) -> str | None:
    """What differs between a replayed step and its record (``None`` if nothing)."""
    seeds = tuple(estimate.seed for estimate in result.estimates)
    if seeds != record.seeds:
        return f"seeds {list(seeds)} instead of {list(record.seeds)} (another `zo.seed` or `num_directions`?)"
    signature = plan_signature(engine, record.step, result.active)
    logged = (record.active_block, record.refresh, record.active_crc)
    if signature != logged:
        return f"the plan (active block, refresh window, tensor names CRC) is {signature}, the log's {logged}"
    if result.group_eps != record.eps:
        return f"ε per group {result.group_eps} instead of {record.eps}"
    if result.micro_batches != record.micro_batches:
        return f"{result.micro_batches} micro-batches instead of {record.micro_batches}"
    if result.updates != record.updated:
        return f"updated={result.updates}, the log's {record.updated}"
    return None
