"""ε for half-precision compute: the smallest perturbation a bf16 or fp16 forward still sees.

Under ``bf16-mixed`` the weights stay fp32 but autocast runs the matmuls in bf16, whose inputs are rounded to 8
significant bits; under ``bf16-true`` the weights themselves are bf16. A relative change below half a unit in the last
place of a value near 1 (2⁻⁹ for bf16) is rounded away: at MeZO's ε = 1e-3 the perturbation of most norm coordinates
and of many activations never reaches the loss, while the update still moves them along z. Measured on MiniLM-L6
with a new 2-class head and cross-entropy (``shared/cases/precision_step.py``, 6 seeds): the bf16-mixed update was
0.58× the fp32 one at ε = 1e-3, and 1.02× at ε = 2⁻⁹ ≈ 1.95e-3 and at 2⁻⁸ (1.06× at 1.5·2⁻⁸, 1.39× at 2⁻⁷, where
curvature starts to bend the estimate).

Under ``bf16-true`` (weights, and so every activation, in bf16) the floor is one step higher, 2⁻⁸ (fp16: 2⁻¹¹).
There the residual stream itself is bf16: a block's perturbed output is added to it and rounded to 8 significant
bits at every layer, and the weights round θ ± εz to their own grid (half an ulp of a norm weight in [1, 2) is 2⁻⁸).
Measured: on MiniLM-L6 with a fixed readout (``python -m benchmarks.precision_fidelity --seeds 32``) bf16-true's
projected gradient had the fp32 one's sign on 94% of the directions at 2⁻⁹ and 97% at 2⁻⁸ (median ratio 1.00 and
0.96). On the BCD recipe (SmolLM2-135M, one decoder layer per step, ``configs/llm_mezo_bcd_long300.yaml``, 100
steps) bf16-true reached 69.2% test accuracy at 2⁻⁹ and 70.8% at 2⁻⁸ on seed 0 (fp32: 72.0%), 67.2% and 67.0% on
seed 1 (fp32: 67.5%): one seed's difference is within the runs' spread (4e-3 gave 73.5% on seed 0), so the accuracy
says only that 2⁻⁸ costs nothing (``benchmarks/results/precision_accuracy/``).

:func:`half_precision_eps` raises ε to the floor of the compute dtype and of the weights' dtype, and leaves it alone
for full precision.
"""

from __future__ import annotations

import torch

__all__ = ["EPS_FLOOR", "HALF_WEIGHTS_EPS_FLOOR", "compute_dtype", "half_precision_eps"]

EPS_FLOOR: dict[torch.dtype, float] = {
    torch.bfloat16: 2.0**-9,  # 7 stored mantissa bits: half an ulp of 1 is 2⁻⁸; its half again keeps a margin
    torch.float16: 2.0**-12,  # 10 stored mantissa bits
}
"""The smallest ε per half compute dtype on full-precision weights (autocast): 2^-(mantissa bits + 2)."""

HALF_WEIGHTS_EPS_FLOOR: dict[torch.dtype, float] = {
    torch.bfloat16: 2.0**-8,  # half an ulp of a weight in [1, 2); the residual stream rounds at every layer too
    torch.float16: 2.0**-11,
}
"""The smallest ε for weights stored in a half dtype (``bf16-true``, ``16-true``): 2^-(mantissa bits + 1)."""


def compute_dtype(param_dtype: torch.dtype, device_type: str = "cpu") -> torch.dtype:
    """The dtype a forward computes in: autocast's when an autocast region of ``device_type`` is active, else the
    weights' own."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return param_dtype


def half_precision_eps(eps: float, dtype: torch.dtype, weights_dtype: torch.dtype = torch.float32) -> float:
    """``eps`` raised to the floor of the compute ``dtype`` (:data:`EPS_FLOOR`) and of the weights' own dtype
    (:data:`HALF_WEIGHTS_EPS_FLOOR`); unchanged when both are full precision."""
    return max(eps, EPS_FLOOR.get(dtype, 0.0), HALF_WEIGHTS_EPS_FLOOR.get(weights_dtype, 0.0))
