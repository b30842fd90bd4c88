"""The record of one direction's estimate, and the pure helpers around it.

With the plan's tensors moved by ±εᵢzᵢ, ``(L(θ+εz) − L(θ−εz)) / 2`` approximates Σᵢ εᵢ zᵢ·∇ᵢL, so the projected
gradient of tensor i is that half difference divided by εᵢ, and ``projected_gradient·zᵢ`` is an unbiased (as ε → 0)
estimate of ∇ᵢL for Gaussian z. The estimators (:mod:`zolightning.estimators`) decide where the loss is evaluated
and fill this record; the optimizers read it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from zolightning.functional.loss_precision import full_precision_losses, half_precision_context, is_half_precision


LossFn = Callable[[], Tensor | float]
RestoreMode = Literal["arithmetic", "snapshot", "auto"]

OBJECTIVE_ONLY_RETURNS_LOSS = (
    "Under ZO the objective (your `training_step` or closure) only returns the loss, and the step does the rest: "
    "remove `optimizer.step()`, `self.optimizers()`, `manual_backward(loss)` and `loss.backward()` from it, and "
    "`return loss`."
)
HALF_PRECISION_LOSS = (
    "The ZO loss is a {dtype} number: its unit in the last place (0.004 at 0.69 in bf16) is far above L+ - L- "
    "(about 1e-4 at eps 1e-3), so both evaluations would round to the same loss and no step would ever move. "
    "Compute the loss in fp32 from the model's outputs, e.g. `loss = F.mse_loss(out.float(), y.float())` or "
    "`(out.float() - y).pow(2).mean()`; the losses of `torch.nn.functional` (and `nn.CrossEntropyLoss`, Hugging "
    "Face `labels=`) are upcast automatically."
)

BACKWARD_IN_OBJECTIVE = (
    "`loss.backward()` (or another backward pass) was called inside a ZO step's objective, which runs under "
    "`torch.no_grad()`. " + OBJECTIVE_ONLY_RETURNS_LOSS
)
# torch's error for a backward through a graph that `no_grad` never built; it names nothing of the user's code.
_NO_GRAPH = "does not require grad and does not have a grad_fn"


EstimateKind = Literal["two-sided", "one-sided", "forward"]


@dataclass(frozen=True)
class DirectionalEstimate:
    """One direction's estimate of the directional derivative along εz: what an estimator measured, after the
    cross-rank reduce.

    Three kinds share this record, so that every optimizer and every structure works with each of them:

    - ``two-sided`` (SPSA, MeZO): L+ = L(θ + εz) and L− = L(θ − εz); ``difference`` = (L+ − L−)/2.
    - ``one-sided``: L0 = L(θ) and L+; ``difference`` = L+ − L0 (one forward fewer than with ``center``, but bias O(ε)).
    - ``forward``: the exact directional derivative from forward-mode AD (``torch.func.jvp``), ``difference`` =
      ∇L·εz, and L0.

    Attributes:
        seed: the step seed the direction was drawn from.
        loss_plus: L(θ + εz), a 0-dim fp32 tensor (after ``reduce``); ``None`` for ``forward``.
        loss_minus: L(θ − εz); ``None`` unless ``two-sided``.
        loss_center: L(θ); present for ``one-sided`` and ``forward``, and for ``two-sided`` when asked for (HiZOO's
            curvature and ZO-SGD-Cons need it).
        derivative: ∇L·εz for ``forward``, else ``None``.
        kind: one of the three kinds above (default ``two-sided``).
        normalizer: when set, the projected gradient is ``difference / normalizer`` for every tensor instead of
            ``difference / ε`` (FZOO's normalized step: the spread of the step's losses; see
            :class:`~zolightning.estimators.FZOO`).
    """

    seed: int
    loss_plus: Tensor | None
    loss_minus: Tensor | None = None
    loss_center: Tensor | None = None
    derivative: Tensor | None = None
    kind: EstimateKind = "two-sided"
    normalizer: float | None = None

    @property
    def difference(self) -> Tensor:
        """The change of the loss along εz: (L+ − L−)/2, L+ − L0, or ∇L·εz, by kind (0-dim fp32)."""
        if self.kind == "forward":
            assert self.derivative is not None
            return self.derivative
        if self.kind == "one-sided":
            assert self.loss_plus is not None and self.loss_center is not None
            return self.loss_plus - self.loss_center
        assert self.loss_plus is not None and self.loss_minus is not None
        return (self.loss_plus - self.loss_minus) / 2

    @property
    def second_difference(self) -> Tensor:
        """L+ + L− − 2·L0 ≈ ε²·zᵀHz, the curvature along z (needs a two-sided estimate with the centre)."""
        if self.kind != "two-sided" or self.loss_center is None:
            raise ValueError("The second difference needs L+, L− and L0: a two-sided estimate with `center=True`.")
        assert self.loss_plus is not None and self.loss_minus is not None
        return self.loss_plus + self.loss_minus - 2 * self.loss_center

    @property
    def loss(self) -> Tensor:
        """The loss at θ as a training log shows it: L0 when it was evaluated, else (L+ + L−)/2 (exact up to O(ε²))."""
        if self.loss_center is not None:
            return self.loss_center
        assert self.loss_plus is not None and self.loss_minus is not None
        return (self.loss_plus + self.loss_minus) / 2

    def projected_gradient(self, eps: float, clip: float | None = None) -> float:
        """g = ``difference``/ε for a tensor perturbed with scale ``eps`` (``difference``/``normalizer`` when the
        estimator normalizes), clipped to [−clip, clip] when given."""
        value = float(self.difference) / (eps if self.normalizer is None else self.normalizer)
        if clip is not None:
            value = max(-clip, min(clip, value))
        return value

    @property
    def is_finite(self) -> bool:
        parts = [self.loss_plus, self.loss_minus, self.loss_center, self.derivative]
        return all(bool(torch.isfinite(part)) for part in parts if part is not None)


def evaluate_loss(loss_fn: LossFn) -> Tensor:
    """Call ``loss_fn`` under ``no_grad`` and return its value as a detached 0-dim fp32 tensor.

    Under half precision (an autocast region or a default dtype of bf16/fp16, as Lightning's ``bf16-mixed`` and
    ``bf16-true`` set them) the losses of ``torch.nn.functional`` are computed from fp32 copies of their inputs
    (:func:`~zolightning.functional.loss_precision.full_precision_losses`): a bf16 loss cannot resolve L+ − L−.

    Raises:
        TypeError: the loss is not a scalar, or it is a half-precision number (a loss written by hand in bf16),
            with the fix.
        RuntimeError: ``loss_fn`` ran a backward pass (``loss.backward()`` left in a ``training_step``), with the fix.
    """
    half = half_precision_context()
    try:
        with torch.no_grad(), full_precision_losses() if half else contextlib.nullcontext():
            value = loss_fn()
    except RuntimeError as error:
        if _NO_GRAPH in str(error):
            raise RuntimeError(BACKWARD_IN_OBJECTIVE) from error
        raise
    if not isinstance(value, Tensor):
        value = torch.tensor(float(value))
    if is_half_precision(value):
        raise TypeError(HALF_PRECISION_LOSS.format(dtype=str(value.dtype).removeprefix("torch.")))
    if value.numel() != 1:
        raise TypeError(
            f"The ZO loss must be a scalar, got a tensor of shape {tuple(value.shape)}; reduce it (e.g. `.mean()`)."
        )
    return value.detach().reshape(()).float()
