"""Build any of our optimizers by name, from data (a YAML field, a sweep table), as timm's ``create_optimizer`` does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zolightning.optim.adam import ZOAdam
from zolightning.optim.conservative import ZOSGDCons
from zolightning.optim.hizoo import HiZOO
from zolightning.optim.optimizer import ParamsT, ZOOptimizer
from zolightning.optim.sgd import ZOSGD
from zolightning.optim.sign import ZOSGDSign


@dataclass(frozen=True)
class OptimizerSpec:
    """A named optimizer: its class and the defaults the name implies."""

    cls: type[ZOOptimizer]
    defaults: Mapping[str, Any] = field(default_factory=dict)


# Names follow ZO-Bench (field notes §1).
OPTIMIZERS: dict[str, OptimizerSpec] = {
    "zo-sgd": OptimizerSpec(ZOSGD),
    "zo-sgd-mmt": OptimizerSpec(ZOSGD, {"momentum": 0.9}),
    "zo-sgd-sign": OptimizerSpec(ZOSGDSign),
    "zo-sgd-cons": OptimizerSpec(ZOSGDCons),
    "zo-adam": OptimizerSpec(ZOAdam),
    "hizoo": OptimizerSpec(HiZOO),
}


def create_optimizer(name: str, params: ParamsT, **kwargs: Any) -> ZOOptimizer:
    """The optimizer registered as ``name`` (see :data:`OPTIMIZERS`), with its implied defaults, then ``kwargs``.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    key = name.lower().replace("_", "-")
    if key not in OPTIMIZERS:
        raise ValueError(f"Unknown ZO optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}.")
    spec = OPTIMIZERS[key]
    return spec.cls(params, **{**spec.defaults, **kwargs})
