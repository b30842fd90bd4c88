"""FZOO's normalized one-sided estimate (FZOO, arXiv 2506.09034; reference code DKmiyan/FZOO)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from zolightning.estimators.base import Estimator, ProbeLike
from zolightning.functional.estimate import DirectionalEstimate


class FZOO(Estimator):
    """N one-sided probes around one shared L(θ), the step normalized by the spread of their losses.

    Per step: L0 = L(θ) once, then Lᵢ = L(θ + εuᵢ) for i = 1 … N (N + 1 forwards instead of MeZO's 2N for N
    directions). With σ the standard deviation of L₁ … L_N (population form, as the reference code), each direction's
    projected gradient is gᵢ = (Lᵢ − L0)/σ, and the update averages them: θ ← θ − lr·(1/N)·Σᵢ gᵢ·uᵢ. ε cancels out of
    the step length: σ grows with ε as the differences do, so lr is a step length in units of u, and the step adapts
    to the local loss scale much as Adam's normalization does. When every Lᵢ is equal (σ = 0) the step is zero.

    The paper draws Rademacher uᵢ (set ``zo.distribution: rademacher``); any structure's directions work.

    Args:
        directions: N ≥ 2 probes per step (the paper uses N = 8 … 16 on OPT).

    Under data parallelism the N + 1 losses are averaged over ranks before σ is taken. Under query parallelism every
    rank's probes are gathered, each keeping its own L0, and σ is taken over all of them.
    """

    def __init__(self, directions: int = 8) -> None:
        super().__init__(directions)
        if directions < 2:
            raise ValueError(f"FZOO needs `num_directions` >= 2 (the spread of the probe losses), got {directions}.")

    def points(self, center: bool) -> tuple[float, ...]:
        return (1.0,)

    def width(self, center: bool = False) -> int:
        return 2  # [L0, L(θ + εu)]

    def forwards_per_step(self, center: bool = False) -> int:
        return self.directions + 1

    def measure(self, probe: ProbeLike, seeds: Sequence[int], center: bool = False) -> Tensor:
        center_loss = probe.evaluate()
        # Row j: [L0, L(θ + εu_j)], so that every row carries its own L0 through a gather.
        return torch.stack([torch.stack([center_loss, probe.loss_at(seed, 1.0)]) for seed in seeds])

    def combine(self, numbers: Tensor, seeds: Sequence[int], center: bool = False) -> list[DirectionalEstimate]:
        spread = float(numbers[:, 1].std(correction=0))
        normalizer = spread if spread > 0.0 else float("inf")
        return [
            DirectionalEstimate(seed=s, loss_center=row[0], loss_plus=row[1], kind="one-sided", normalizer=normalizer)
            for s, row in zip(seeds, numbers, strict=True)
        ]
