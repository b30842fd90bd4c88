"""ZO-SGD: MeZO's in-place update, with optional momentum (ZO-SGD-MMT in ZO-Bench)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from zolightning.engine.measurement import Measurement
from zolightning.functional.noise import tensor_seed
from zolightning.functional.perturbation import ActiveTensor
from zolightning.functional.rounding import FULL_PRECISION, LowPrecisionUpdate
from zolightning.functional.sgd import zo_sgd_update_
from zolightning.optim.optimizer import ParamsT, ZOOptimizer


class ZOSGD(ZOOptimizer):
    """Zeroth-order SGD (MeZO, Malladi et al. 2023, Algorithm 1).

    Per step: g = (L(θ+εz) − L(θ−εz)) / 2ε, then θ ← θ − lr·(g·z + λθ) with z regenerated from the step seed.

    Args:
        params: parameters, dicts of param groups, or ``named_parameters()``. Parameters with
            ``requires_grad=False`` are never perturbed or updated.
        lr: learning rate (MeZO full fine-tuning: 1e-6 or 1e-7; LoRA: 1e-4 or 5e-5; prefix: 1e-2 or 1e-3).
        eps: perturbation scale ε (MeZO: 1e-3 full, 1e-2 LoRA, 1e-1 prefix).
        weight_decay: λ. By default not applied to 1-D tensors (biases and norm weights), as in MeZO.
        momentum: μ ∈ [0, 1). 0 (default) keeps no state at all. μ > 0 keeps one fp32 buffer per tensor that has
            been updated: +4 bytes per such parameter, i.e. a full fp32 copy of the trainable weights for a dense plan.
        decay_1d: also decay 1-D tensors (default ``False``).
        low_precision: how updates reach bf16/fp16 weights: ``stochastic`` (default: stochastic rounding, unbiased,
            no memory, so updates below half an ulp still move the weights on average), ``master`` (an fp32 master
            copy of each active tensor: +4 bytes per active element) or ``nearest`` (plain rounding: updates below
            half an ulp vanish). fp32 weights ignore it.

    Memory: nothing beyond the noise of the largest tensor while it is being applied, unless ``momentum > 0``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-6,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        decay_1d: bool = False,
        low_precision: LowPrecisionUpdate = "stochastic",
    ) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}.")
        defaults = dict(
            lr=lr, eps=eps, weight_decay=weight_decay, momentum=momentum, decay_1d=decay_1d, low_precision=low_precision,
        )
        super().__init__(params, defaults)

    def _update(self, measurement: Measurement) -> None:
        groups = self.group_of()
        fused = self._fused_update(measurement, groups)
        for entry, z, projected_gradient in self.directions(measurement, skip=fused):
            self._sgd_update(entry, z, projected_gradient, groups[id(entry.param)])

    def _fused_update(self, measurement: Measurement, groups: dict[int, dict[str, Any]]) -> set[int]:
        """Update, in one pass each, the tensors whose z is generated inside the pass (dense counter noise, one
        direction, no momentum, no fp32 master copy): the restore the measurement left owed, the decay and the step
        in a single read and write of θ. Returns their plan indices, for :meth:`directions` to skip."""
        if len(measurement.estimates) != 1:
            return set()
        (estimate,) = measurement.estimates
        done: set[int] = set()
        for index, entry in enumerate(measurement.plan):
            group = groups[id(entry.param)]
            full = entry.data.dtype in FULL_PRECISION
            if not entry.fused or group["momentum"] > 0 or (not full and group["low_precision"] == "master"):
                continue
            settling = self._settling
            restore = settling.owed(index, estimate.seed) if settling is not None else 0.0
            entry.direction.sgd_update_(
                entry.data,
                tensor_seed(estimate.seed, entry.key),
                self.projected_gradient(entry, estimate, measurement, group),
                lr=group["lr"] * entry.lr_scale,
                weight_decay=group["weight_decay"] if group["decay_1d"] or entry.param.dim() > 1 else 0.0,
                restore=restore,
                rounding="nearest" if full or group["low_precision"] == "nearest" else "stochastic",
                rounding_seed=tensor_seed(self._rounding_seed, entry.key),
                offset=entry.offset,
            )
            if settling is not None:
                settling.paid(index)
            done.add(index)
        return done

    def _sgd_update(self, entry: ActiveTensor, z: Tensor, projected_gradient: float, group: dict[str, Any]) -> None:
        """θ ← θ − lr·(g·z + λθ) (or with momentum) for one tensor of the plan."""
        decays = group["decay_1d"] or entry.param.dim() > 1
        state = self.state[entry.param] if group["momentum"] > 0 else None
        with self.update_target(entry, group) as target:
            buffer = zo_sgd_update_(
                target,
                z,
                projected_gradient,
                lr=group["lr"] * entry.lr_scale,
                weight_decay=group["weight_decay"] if decays else 0.0,
                momentum=group["momentum"],
                momentum_buffer=None if state is None else state.get("momentum_buffer"),
            )
        if state is not None:
            state["momentum_buffer"] = buffer
