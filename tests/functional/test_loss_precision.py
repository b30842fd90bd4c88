"""Losses in fp32 from half-precision outputs, so that L+ − L− survives a bf16 model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zolightning.functional.estimate import evaluate_loss
from zolightning.functional.loss_precision import full_precision_losses, half_precision_context


def test_losses_compute_from_fp32_copies_and_other_ops_keep_their_dtype():
    logits, labels = torch.randn(8, 2).bfloat16(), torch.randint(0, 2, (8,))
    with full_precision_losses():
        assert F.cross_entropy(logits, labels).dtype == torch.float32
        assert torch.nn.CrossEntropyLoss()(logits, labels).dtype == torch.float32  # modules call F.*
        assert F.mse_loss(logits, logits.flip(0)).dtype == torch.float32
        assert (logits @ logits.T).dtype == torch.bfloat16  # the network itself is untouched
    assert F.cross_entropy(logits, labels).dtype == torch.bfloat16  # nothing leaks out of the context


def test_a_logit_difference_far_below_a_bf16_ulp_of_the_loss_reaches_the_loss():
    # The case of shared/cases/precision_step.py: ±εz moves the logits by ~1e-4, the bf16 loss's ulp at 0.69 is 4e-3.
    base = torch.tensor([[0.50, 0.52]] * 16, dtype=torch.bfloat16)
    nudged = base.clone()
    nudged[:, 1] += 2**-8  # one bf16 ulp of the logit itself
    labels = torch.zeros(16, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plus = evaluate_loss(lambda: F.cross_entropy(nudged, labels))
        minus = evaluate_loss(lambda: F.cross_entropy(base, labels))
    assert float(plus) != float(minus)
    assert float(F.cross_entropy(nudged, labels)) == float(F.cross_entropy(base, labels))  # in bf16 they tie


def test_half_precision_is_detected_in_autocast_and_under_a_half_default_dtype():
    assert not half_precision_context()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert half_precision_context()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        assert half_precision_context()
    finally:
        torch.set_default_dtype(previous)


def test_a_loss_written_by_hand_in_bf16_is_refused_with_the_fix():
    out, target = torch.randn(8).bfloat16(), torch.randn(8).bfloat16()
    with pytest.raises(TypeError, match=r"bfloat16 number.*out.float\(\)"):
        evaluate_loss(lambda: (out - target).pow(2).mean())
