"""ε for half-precision compute: the smallest perturbation a bf16 or fp16 forward still sees.

Under ``bf16-mixed`` the weights stay fp32 but autocast runs the matmuls in bf16, whose inputs are rounded to 8
significant bits; under ``bf16-true`` the weights themselves are bf16. A relative change below half a unit in the last
place of a value near 1 (2⁻⁹ for bf16) is rounded away: at MeZO's ε = 1e-3 the perturbation of most norm coordinates
and of many activations never reaches the loss, while the update still moves them along z. Measured on MiniLM-L6
with a new 2-class head and cross-entropy (``shared/cases/precision_step.py``, 6 seeds): the bf16-mixed update was
0.58× the fp32 one at ε = 1e-3, and 1.02× at ε = 2⁻⁹ ≈ 1.95e-3 and at 2⁻⁸ (1.06× at 1.5·2⁻⁸, 1.39× at 2⁻⁷, where
curvature starts to bend the estimate).

:func:`half_precision_eps` raises ε to that floor for a half compute dtype and leaves it alone otherwise.
"""

from __future__ import annotations

import torch

__all__ = ["EPS_FLOOR", "compute_dtype", "half_precision_eps"]

EPS_FLOOR: dict[torch.dtype, float] = {
    torch.bfloat16: 2.0**-9,  # 7 stored mantissa bits: half an ulp of 1 is 2⁻⁸; its half again keeps a margin
    torch.float16: 2.0**-12,  # 10 stored mantissa bits
}
"""The smallest ε per half compute dtype: 2^-(mantissa bits + 2)."""


def compute_dtype(param_dtype: torch.dtype, device_type: str = "cpu") -> torch.dtype:
    """The dtype a forward computes in: autocast's when an autocast region of ``device_type`` is active, else the
    weights' own."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return param_dtype


def half_precision_eps(eps: float, dtype: torch.dtype) -> float:
    """``max(eps, EPS_FLOOR[dtype])`` for bf16 and fp16 compute, ``eps`` for any other dtype."""
    return max(eps, EPS_FLOOR.get(dtype, 0.0))
