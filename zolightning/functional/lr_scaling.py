"""Learning-rate scales per tensor: ``zo.lr_scales``' regex multipliers and the ``by_block_size`` rule (pure math).

Why block size. One ZO-SGD step along a direction z ~ N(0, I) spanning d coordinates (the active block), with
g = ∇ᵀz and the update −η·g·z, changes the loss by, to second order (H the block's Hessian),

    E[ΔL] = −η‖∇‖² + η²/2 · (‖∇‖²·tr(H) + 2·∇ᵀH∇),

because E[(∇ᵀz)²·zᵀHz] = ‖∇‖²·tr(H) + 2·∇ᵀH∇ for Gaussian z. The step that lowers the loss most is
η* = 1 / (tr(H) + 2ρ) with ρ = ∇ᵀH∇ / ‖∇‖², and steps beyond 2η* raise it. With a curvature λ per coordinate,
tr(H) = λ·d and ρ ≤ λ, so η* ≈ 1 / (λ·(d + 2)): the stable step shrinks with the block's size. One lr for blocks of
28M and 3.5M coordinates is either 8× too cautious for the small ones or 8× too bold for the large one. Scaling each
step by (D + 2) / (d + 2), with D the size of every trainable tensor together, makes the dense lr (d = D, scale 1)
the one to give: each block then takes the step dense ZO-SGD's stability allows for its size.

The rule assumes a similar curvature per coordinate across blocks; ``benchmarks/block_curvature.py`` measures
tr(H_b) / d_b per block of a real model to check how far that holds.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from zolightning.functional.checks import check_scales

__all__ = ["BY_BLOCK_SIZE", "block_size_scale", "check_lr_scales", "regex_scale"]

BY_BLOCK_SIZE = "by_block_size"
"""The ``zo.lr_scales`` rule (alone, or as a key beside regexes) that scales each step by its block's size."""


def check_lr_scales(value: Mapping[str, Any] | str | None) -> dict[str, float]:
    """``zo.lr_scales`` as ``{regex or "by_block_size": multiplier}``: the string ``"by_block_size"`` becomes
    ``{"by_block_size": 1.0}``; regexes must compile and multipliers be ≥ 0.

    Raises:
        ValueError: another string, a bad regex or a negative multiplier, naming ``lr_scales``.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        if value != BY_BLOCK_SIZE:
            raise ValueError(
                f"`lr_scales` must be a mapping {{parameter-name regex: multiplier}} or the rule '{BY_BLOCK_SIZE}', "
                f"got {value!r}."
            )
        return {BY_BLOCK_SIZE: 1.0}
    return check_scales(dict(value), "lr_scales")


def block_size_scale(active: int, total: int, block_sizes: Sequence[int] | None = None) -> float:
    """(total + 2) / (d + 2), d = max(``active``, the median of ``block_sizes``): ZO-SGD's stable step for the
    active coordinates over that for all of them.

    Blocks smaller than the median count as median-sized. Their coordinates (norm gains, biases) each scale a whole
    activation, so their curvature per coordinate is far above a weight matrix's: measured on SmolLM2-135M, the
    final norm's tr(H)/d is 3.9e-3 against a median of 7.4e-6 over the decoder layers, about 500× more
    (``benchmarks/block_curvature.py``; Hutchinson estimates, noisy per layer), and the size rule alone would give
    that 576-weight block 6,000× a layer's lr.

    Args:
        active: coordinates the step perturbs (≥ 1).
        total: coordinates of every trainable tensor (≥ ``active``).
        block_sizes: the sizes of the blocks the structure steps through (``None``: no blocks, no floor).
    """
    if active < 1 or total < active:
        raise ValueError(f"Need 1 <= active <= total coordinates, got active={active}, total={total}.")
    floor = statistics.median_low(block_sizes) if block_sizes else 0
    return (total + 2) / (min(max(active, floor), total) + 2)


def regex_scale(scales: Mapping[str, float], name: str) -> float:
    """The multiplier of the first regex in ``scales`` that matches ``name`` (1 if none; the rule's key is skipped)."""
    for pattern, scale in scales.items():
        if pattern != BY_BLOCK_SIZE and re.search(pattern, name):
            return float(scale)
    return 1.0
