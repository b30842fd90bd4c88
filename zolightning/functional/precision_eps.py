"""ε for half-precision compute: the smallest perturbation a bf16 or fp16 forward still sees.

Under ``bf16-mixed`` the weights stay fp32 but autocast runs the matmuls in bf16, whose inputs (the weights among
them) are rounded to 8 significant bits; under ``bf16-true`` the weights themselves are bf16, and so is the residual
stream, rounded after every layer. A perturbation below half a unit in the last place of a weight is rounded away
(half an ulp of a value in [1, 2) is 2⁻⁸): at MeZO's ε = 1e-3 the perturbation of most norm coordinates and of many
matrix entries never reaches the loss, while the update still moves them along z.

:func:`half_precision_eps` raises ε to 2⁻⁸ ≈ 3.9e-3 for bf16 (fp16: 2⁻¹¹), whether the compute or the weights are
in half precision, and leaves it alone for full precision. Measured:

- ``shared/cases/precision_step.py`` (MiniLM-L6, a new 2-class head, cross-entropy, 6 seeds): the bf16-mixed update
  was 0.58× the fp32 one at ε = 1e-3, 1.02× at 2⁻⁹ and at 2⁻⁸, 1.39× at 2⁻⁷ (where curvature bends the estimate).
- ``python -m benchmarks.precision_fidelity --seeds 32`` (fixed readout): bf16-true's projected gradient had the fp32
  one's sign on 94% of directions at 2⁻⁹ and 97% at 2⁻⁸.
- The BCD recipe (SmolLM2-135M, ``configs/llm_mezo_bcd_long300.yaml``, 100 steps; fp32 72.0% and 67.5% test
  accuracy on seeds 0 and 1): bf16-mixed 70.1% and 65.2% at 2⁻⁹, 71.1% and 67.9% at 2⁻⁸; bf16-true 69.2% and
  67.2% at 2⁻⁹, 70.8% and 67.0% at 2⁻⁸ (``benchmarks/results/precision_accuracy/``).
"""

from __future__ import annotations

import torch

__all__ = ["EPS_FLOOR", "compute_dtype", "half_precision_eps"]

EPS_FLOOR: dict[torch.dtype, float] = {
    torch.bfloat16: 2.0**-8,  # 7 stored mantissa bits: half an ulp of a value in [1, 2)
    torch.float16: 2.0**-11,  # 10 stored mantissa bits
}
"""The smallest ε per half dtype, of the compute or of the weights: 2^-(stored mantissa bits + 1)."""


def compute_dtype(param_dtype: torch.dtype, device_type: str = "cpu") -> torch.dtype:
    """The dtype a forward computes in: autocast's when an autocast region of ``device_type`` is active, else the
    weights' own."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return param_dtype


def half_precision_eps(eps: float, dtype: torch.dtype, weights_dtype: torch.dtype = torch.float32) -> float:
    """``eps`` raised to the :data:`EPS_FLOOR` of the compute ``dtype`` and of the weights' own dtype (the larger);
    unchanged when both are full precision."""
    return max(eps, EPS_FLOOR.get(dtype, 0.0), EPS_FLOOR.get(weights_dtype, 0.0))
