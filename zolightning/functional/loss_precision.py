"""Losses in fp32 from half-precision outputs: what makes L+ − L− visible under ``bf16-true``.

A two-point estimate needs L(θ + εz) − L(θ − εz), about 1e-4 at ε = 1e-3, at a resolution far below it. A loss
computed in bf16 has a unit in the last place of 0.004 at 0.69, so the two losses round to the same number and
g = 0 at every step (``shared/cases/precision_step.py``: L+ = L− = 0.6953125). The outputs themselves (logits)
carry the difference, spread over many elements; the reduction to one number is where it is lost.

:func:`full_precision_losses` is a ``TorchFunctionMode`` that upcasts the floating-point tensor arguments of the loss
functions of ``torch.nn.functional`` (and so of their ``nn`` modules, e.g. ``nn.CrossEntropyLoss``, and of Hugging
Face models' ``labels=`` losses, which call them) to fp32 while the objective runs. The network itself still runs in
its own precision; only the loss is computed from fp32 copies of its inputs. A loss written by hand
(``(out - y).pow(2).mean()``) is not seen: :func:`is_half_precision` lets the caller refuse it with the fix.

An fp32 loss of bf16 *logits* still sees them rounded: a bf16 logit near 10 has a unit in the last place of 0.06,
far above what one perturbation moves it. The tasks therefore compute their class scores, the last projection, with
:func:`full_precision_linear`: fp32 copies of its few rows, outside autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["LOSS_FUNCTIONS", "full_precision_linear", "full_precision_losses", "half_precision_context", "is_half_precision"]

LOSS_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset({
    F.cross_entropy, F.nll_loss, F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss, F.kl_div,
    F.binary_cross_entropy, F.binary_cross_entropy_with_logits, F.poisson_nll_loss, F.gaussian_nll_loss,
    F.soft_margin_loss, F.multilabel_soft_margin_loss, F.multi_margin_loss, F.hinge_embedding_loss,
    F.cosine_embedding_loss, F.margin_ranking_loss, F.triplet_margin_loss,
})
"""The ``torch.nn.functional`` losses whose inputs are upcast."""

_HALF = (torch.float16, torch.bfloat16)


def is_half_precision(loss: Tensor) -> bool:
    """Whether ``loss`` is a half-precision number (bf16 or fp16), too coarse for a two-point estimate."""
    return loss.dtype in _HALF


def half_precision_context() -> bool:
    """Whether code run now computes in half precision: an autocast region with a bf16/fp16 dtype (``bf16-mixed``),
    or a half default dtype (``bf16-true`` sets one around ``training_step``)."""
    if torch.get_default_dtype() in _HALF:
        return True
    for device in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) in _HALF:
            return True
    return False


def full_precision_linear(features: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``features @ weight.T + bias`` in fp32, outside autocast: class scores at a resolution that shows L+ − L−.

    Shapes: ``features [..., H]``, ``weight [C, H]``, ``bias [C]`` → ``[..., C]`` fp32. Under fp32 it is
    ``F.linear`` exactly. The inputs' own rounding stays (they come from a half-precision network); only the output
    is not rounded again. Gradients flow to the half-precision weights as usual. Costs ``C × H`` fp32 copies.
    """
    with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
        return F.linear(features.float(), weight.float(), None if bias is None else bias.float())


def _upcast(value: Any) -> Any:
    if isinstance(value, Tensor) and value.dtype in _HALF:
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_upcast(v) for v in value)
    return value


class full_precision_losses(TorchFunctionMode):  # noqa: N801 (used as a context manager, named like one)
    """Within this context, every loss of :data:`LOSS_FUNCTIONS` computes from fp32 copies of its half-precision
    tensor arguments, so it returns an fp32 loss. Other calls pass through untouched.

    Example::

        with full_precision_losses():
            loss = model(input_ids=ids, labels=labels).loss   # fp32 even when the model runs in bf16
    """

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None):
        kwargs = kwargs or {}
        if func in LOSS_FUNCTIONS:
            # Outside autocast too: a bf16 loss under bf16-true weights has no autocast region to upcast it.
            with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
                return func(*_upcast(args), **{k: _upcast(v) for k, v in kwargs.items()})
        return func(*args, **kwargs)
