"""The ε floor for half-precision compute."""

import torch

from zolightning.functional.precision_eps import compute_dtype, half_precision_eps


def test_eps_is_raised_to_the_floor_only_for_half_compute():
    assert half_precision_eps(1e-3, torch.bfloat16) == 2.0**-8  # half an ulp of a value in [1, 2)
    assert half_precision_eps(1e-2, torch.bfloat16) == 1e-2
    assert half_precision_eps(1e-5, torch.float16) == 2.0**-11
    assert half_precision_eps(1e-5, torch.float32) == 1e-5


def test_half_precision_weights_raise_eps_even_when_the_compute_dtype_is_full():
    assert half_precision_eps(1e-3, torch.float32, torch.bfloat16) == 2.0**-8
    assert half_precision_eps(1e-3, torch.bfloat16, torch.bfloat16) == 2.0**-8
    assert half_precision_eps(1e-5, torch.float32, torch.float16) == 2.0**-11


def test_the_compute_dtype_is_autocasts_inside_a_region_and_the_weights_outside():
    assert compute_dtype(torch.float32) == torch.float32
    assert compute_dtype(torch.bfloat16) == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(torch.float32) == torch.bfloat16
