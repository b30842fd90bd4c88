"""ZO-SGD-Sign: ZO-SGD on the sign of the projected gradient (ZO-Bench's ZO-SGD-Sign; Liu et al. 2019, ZO-signSGD)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from zolightning.engine.measurement import Measurement
from zolightning.functional.rounding import LowPrecisionUpdate
from zolightning.optim.optimizer import ParamsT
from zolightning.optim.sgd import ZOSGD


class ZOSGDSign(ZOSGD):
    """θ ← θ − lr·sign(g)·z (``elementwise=False``, ZO-Bench's form), or θ ← θ − lr·sign(g·z) (``elementwise=True``,
    ZO-signSGD's elementwise sign).

    The step length no longer scales with |g|, so a single outlier estimate cannot throw the weights far; lr sets the
    step length directly (ZO-Bench uses lr 1e-3… 1e-5 with it on OPT). With q directions the scalar signs are averaged,
    Σₖ sign(gₖ)·zₖ / q; the elementwise sign is taken of the averaged estimate.

    Args are those of :class:`~zolightning.optim.ZOSGD` plus ``elementwise`` (default ``False``), a group setting like
    the others (in ``defaults``, so in ``state_dict`` and a trajectory's header). Memory: as ZOSGD (nothing without
    momentum).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-5,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        decay_1d: bool = False,
        elementwise: bool = False,
        low_precision: LowPrecisionUpdate = "stochastic",
    ) -> None:
        super().__init__(
            params, lr=lr, eps=eps, weight_decay=weight_decay, momentum=momentum, decay_1d=decay_1d,
            low_precision=low_precision,
        )
        # One more default, filled into each group that does not set it, as torch fills in every default.
        self.defaults["elementwise"] = bool(elementwise)
        for group in self.param_groups:
            group.setdefault("elementwise", bool(elementwise))

    def transform_projected_gradient(self, projected_gradient: float, group: Mapping[str, Any]) -> float:
        if group["elementwise"]:
            return projected_gradient
        return math.copysign(1.0, projected_gradient) if projected_gradient != 0.0 else 0.0

    def _update(self, measurement: Measurement) -> None:
        groups = self.group_of()
        for entry, z, projected_gradient in self.directions(measurement):
            group = groups[id(entry.param)]
            if group["elementwise"]:
                z, projected_gradient = z.mul(projected_gradient).sign_(), 1.0
            self._sgd_update(entry, z, projected_gradient, group)
