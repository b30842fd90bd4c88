"""What a trajectory's header says about a run, and how replay rebuilds the run's step from it.

A ZO step is a function of its seeds, the plan (the structure's rules and state, the optimizer's groups) and a few
measured numbers. The header keeps everything but the numbers: the ZO config, the optimizer (class, per-group settings
and parameter names), the structure rules (registry name, :meth:`~zolightning.structures.base.StructureRule.config`,
initial state), and the base weights' fingerprint. :func:`build_step` turns it back into an engine and an optimizer
over a module's parameters.
"""

from __future__ import annotations

import importlib
import json
import os
import zlib
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from zolightning.config import ZOConfig
from zolightning.engine.step import StepEngine
from zolightning.optim.optimizer import ZOOptimizer
from zolightning.structures.base import StructureRule
from zolightning.structures.registry import STRUCTURES, create_rule
from zolightning.trajectory.format import TrajectoryError
from zolightning.version import __version__

_PARTS = ("selection", "directions")


class _NotPlain(Exception):
    """A value with no plain (JSON) form, which a header cannot keep."""


def plain(value: Any) -> Any:
    """``value`` as JSON data (plain tuples become lists); raises ``_NotPlain`` for anything else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if type(value) in (list, tuple):
        return [plain(item) for item in value]
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {key: plain(item) for key, item in value.items()}
    raise _NotPlain(type(value).__name__)


def class_path(cls: type) -> str:
    """``module.QualName``, importable again by :func:`import_class`; refuses classes defined inside functions."""
    if "<locals>" in cls.__qualname__:
        raise TrajectoryError(f"{cls.__qualname__} is defined inside a function; replay must import it by name.")
    return f"{cls.__module__}.{cls.__qualname__}"


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def check_replayable(config: ZOConfig, optimizer: Optimizer | None) -> None:
    """Refuse, naming why, a run whose steps a log of seeds and numbers could not replay (``optimizer=None``: check
    the config alone). Every ZO optimizer replays: what its update reads was measured, so the numbers hold it."""
    if config.gradient == "backprop":
        raise TrajectoryError(
            "`zo.gradient: backprop` steps are not ZO steps: a backprop update needs the whole gradient, not a few "
            "numbers per step, so it cannot be logged as a trajectory. Remove TrajectoryLog or train with ZO."
        )
    if optimizer is None:
        return
    if not isinstance(optimizer, ZOOptimizer):
        raise TrajectoryError(
            f"{type(optimizer).__name__} is a plain torch.optim optimizer: its update is torch's own step on the "
            "estimate written into `.grad`, with settings and state the log does not record, so it cannot be "
            "replayed from the log. Use a ZO optimizer (zolightning.optim: ZOSGD, ZOSGDSign, ZOSGDCons, ZOAdam, HiZOO)."
        )


def rule_spec(rule: StructureRule) -> dict[str, Any]:
    """A rule as its registry name, its :meth:`~zolightning.structures.base.StructureRule.config` (nested rules as
    specs) and its current state; refuses a rule the registry does not name, or whose config is not JSON data."""
    names = {cls: name for name, cls in STRUCTURES.items()}
    name = names.get(type(rule))
    if name is None:
        raise TrajectoryError(
            f"{type(rule).__name__} is not in zolightning.structures.registry.STRUCTURES, so a replay could not "
            "rebuild it: register it there (one line) to log its runs."
        )
    args: dict[str, Any] = {}
    try:
        config = rule.config()
    except NotImplementedError as error:
        raise TrajectoryError(str(error)) from None
    for parameter, value in config.items():
        if isinstance(value, StructureRule):
            args[parameter] = {"rule": rule_spec(value)}
            continue
        try:
            args[parameter] = plain(value)
        except _NotPlain as error:
            raise TrajectoryError(f"{type(rule).__name__}'s config holds {error} `{parameter}`; a trajectory header "
                                  "keeps numbers, strings and lists.") from None
    try:
        state = plain(rule.state_dict())
    except _NotPlain as error:
        raise TrajectoryError(f"{type(rule).__name__}'s state holds {error} at the start of the run; a trajectory "
                              "must start from a rule's initial state (start a new log with the run).") from None
    return {"name": name, "args": args, "state": state}


def build_rule(spec: Mapping[str, Any]) -> StructureRule:
    """The rule :func:`rule_spec` described (its state is loaded once it is bound: :func:`build_step`)."""
    args = {key: build_rule(value["rule"]) if isinstance(value, Mapping) and "rule" in value else value
            for key, value in spec["args"].items()}
    return create_rule(spec["name"], **args)


def optimizer_spec(optimizer: ZOOptimizer, names: Mapping[int, str]) -> dict[str, Any]:
    """The optimizer's class and, per group, its settings (every option: they are all in the groups) and parameter
    names."""
    groups = []
    for group in optimizer.param_groups:
        settings = {key: value for key, value in group.items() if key not in ("params", "param_names")}
        try:
            settings = plain(settings)
        except _NotPlain as error:
            raise TrajectoryError(f"{type(optimizer).__name__}'s param group holds a {error} setting; a trajectory "
                                  "header keeps numbers, strings and lists (set plain Python values).") from None
        groups.append({"settings": settings, "params": [names[id(p)] for p in group["params"]],
                       "named": "param_names" in group})
    return {"class": class_path(type(optimizer)), "groups": groups}


def run_header(
    module: nn.Module, config: ZOConfig, optimizer: Optimizer, engine: StepEngine, *, fingerprint: bytes,
    world_size: int, total_steps: int | None, default_dtype: torch.dtype,
) -> dict[str, Any]:
    """The header of a new trajectory of ``module``'s run (``fingerprint``: its base weights, before the first step;
    ``default_dtype``: torch's default dtype inside the run's steps, which Lightning's precision sets and which
    tensors made without a dtype take, e.g. stochastic rounding's draws)."""
    check_replayable(config, optimizer)
    assert isinstance(optimizer, ZOOptimizer)
    names = {id(p): name for name, p in module.named_parameters()}
    # LightningCLI adds `_class_path` and the like to the hyperparameters; they are not init arguments.
    hparams = {k: v for k, v in dict(getattr(module, "hparams", {}) or {}).items() if not k.startswith("_")}
    try:
        hparams_data: Any = plain(hparams)
    except _NotPlain:
        hparams_data = None  # the CLI then needs the run's YAML (`--config`)
    trainable = [p for p in module.parameters() if p.requires_grad]
    return {
        "zolightning_version": __version__,
        "base_fingerprint": fingerprint.hex(),
        "model": {"class": class_path(type(module)), "hparams": hparams_data,
                  "global_seed": os.environ.get("PL_GLOBAL_SEED")},
        "zo": plain(asdict(config)),
        "optimizer": optimizer_spec(optimizer, names),
        "structure": {part: rule_spec(getattr(engine.structure, part)) for part in _PARTS},
        "world_size": world_size,
        "query_parallel": config.query_parallel,
        "total_steps": total_steps,
        "default_dtype": str(default_dtype),
        "weights": {"dtypes": sorted({str(p.dtype) for p in trainable}),
                    "device": str(trainable[0].device) if trainable else "cpu"},
    }


def build_step(header: Mapping[str, Any], module: nn.Module) -> tuple[StepEngine, ZOOptimizer]:
    """The engine and optimizer of the logged run, over ``module``'s parameters (matched by name)."""
    params = dict(module.named_parameters())
    spec = header["optimizer"]
    groups = []
    for group in spec["groups"]:
        missing = [name for name in group["params"] if name not in params]
        if missing:
            raise TrajectoryError(f"The module has no parameters {missing[:3]} that the logged optimizer trained.")
        tensors = [(name, params[name]) if group["named"] else params[name] for name in group["params"]]
        groups.append({**group["settings"], "params": tensors})
    optimizer = import_class(spec["class"])(groups)
    # A log written before `zo.noise` existed drew its noise from torch generators.
    config = ZOConfig.coerce({"noise": "torch", **header["zo"]})
    check_replayable(config, optimizer)
    engine = StepEngine(config, module=module)
    engine.names = {id(p): name for name, p in params.items()}
    engine.total_steps = header["total_steps"]
    optimizer.use_engine(engine)
    devices = {name: p.device for name, p in params.items() if p.requires_grad}
    for part in _PARTS:
        rule_spec_ = header["structure"][part]
        rule = build_rule(rule_spec_)
        engine.install(rule, module=module)
        rule.load_state_dict(rule_spec_["state"], devices)
    return engine, optimizer


def plan_signature(engine: StepEngine, step: int, active: tuple[str, ...]) -> tuple[int, int, int]:
    """What a step record keeps of the plan, to check a replay plans alike: the active block's index, the direction
    rule's refresh window (``-1`` for none of either) and the CRC-32 of the active tensors' names."""
    block = engine.structure.selection.active_index(step)
    rule = engine.structure.directions
    rule = getattr(rule, "inner", rule)  # ExcludedDirections refreshes as the rule it wraps
    interval = getattr(rule, "refresh_interval", None)
    refresh = step // interval if interval else -1
    return (-1 if block is None else block, refresh, zlib.crc32("\n".join(active).encode()))


def header_text(header: Mapping[str, Any]) -> str:
    """The header as indented JSON (for ``--show``)."""
    return json.dumps(header, indent=2, sort_keys=True)
