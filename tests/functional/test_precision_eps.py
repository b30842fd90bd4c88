"""The ε floor for half-precision compute."""

import torch

from zolightning.functional.precision_eps import compute_dtype, half_precision_eps


def test_eps_is_raised_to_the_floor_only_for_half_compute():
    assert half_precision_eps(1e-3, torch.bfloat16) == 2.0**-9
    assert half_precision_eps(1e-2, torch.bfloat16) == 1e-2
    assert half_precision_eps(1e-5, torch.float16) == 2.0**-12
    assert half_precision_eps(1e-5, torch.float32) == 1e-5


def test_half_precision_weights_raise_the_floor_one_step_further():
    # bf16-true: the weights and the residual stream round too (bf16: 2⁻⁸, fp16: 2⁻¹¹); bf16-mixed stays at 2⁻⁹.
    assert half_precision_eps(1e-3, torch.bfloat16, torch.bfloat16) == 2.0**-8
    assert half_precision_eps(1e-3, torch.bfloat16, torch.float32) == 2.0**-9
    assert half_precision_eps(1e-5, torch.float16, torch.float16) == 2.0**-11
    assert half_precision_eps(1e-2, torch.bfloat16, torch.bfloat16) == 1e-2


def test_the_compute_dtype_is_autocasts_inside_a_region_and_the_weights_outside():
    assert compute_dtype(torch.float32) == torch.float32
    assert compute_dtype(torch.bfloat16) == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(torch.float32) == torch.bfloat16
