"""Which block is active at each step of block coordinate descent (MeZO-BCD, arXiv 2501.19099).

Every order is a pure function of (step, seed): resuming at any step continues the same schedule, and every
data-parallel rank computes the same block without communication.

Orders (``steps_per_block`` consecutive steps stay on one block; a *sweep* visits every block once):
- ``cyclic``: 0, 1, …, n−1, 0, 1, …
- ``descending``: n−1, …, 0, n−1, … (head first, as backpropagation meets the layers)
- ``flip-flop``: 0, …, n−1, n−1, …, 0, 0, … (alternate sweep directions)
- ``random-permutation``: a new seeded permutation of the blocks each sweep
- ``uniform``: an i.i.d. uniform block per period
- ``size-weighted``: an i.i.d. block per period, with probability proportional to its size
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from zolightning.functional.checks import check_choice, check_int_at_least, choices_of
from zolightning.functional.noise import make_generator, mix_seed

BlockOrder = Literal["cyclic", "descending", "flip-flop", "random-permutation", "uniform", "size-weighted"]
BLOCK_ORDERS = choices_of(BlockOrder)

_PERMUTATION_STREAM = 0x7045524D  # separates the schedule's random draws from every noise stream
_DRAW_STREAM = 0x44524157


class BlockSchedule:
    """The active block index at each step.

    Args:
        num_blocks: n ≥ 1.
        order: one of :data:`BLOCK_ORDERS` (default ``cyclic``).
        steps_per_block: consecutive steps spent on a block (default 1).
        seed: seeds the random orders.
        sizes: block sizes (elements), required by ``size-weighted``.
    """

    def __init__(
        self,
        num_blocks: int,
        order: BlockOrder = "cyclic",
        steps_per_block: int = 1,
        seed: int = 0,
        sizes: Sequence[int] | None = None,
    ) -> None:
        if num_blocks < 1:
            raise ValueError(f"A block schedule needs at least one block, got {num_blocks}.")
        check_order(order)
        check_steps_per_block(steps_per_block)
        if order == "size-weighted" and (sizes is None or len(sizes) != num_blocks):
            raise ValueError("`size-weighted` order needs one size per block.")
        self.num_blocks = num_blocks
        self.order: BlockOrder = order
        self.steps_per_block = steps_per_block
        self.seed = seed
        self.weights = torch.tensor([float(s) for s in sizes], dtype=torch.float64) if sizes is not None else None
        self._permutation: tuple[int, torch.Tensor] | None = None

    def block_at(self, step: int) -> int:
        """The block index (0-based) active at optimizer step ``step``."""
        period = step // self.steps_per_block
        n = self.num_blocks
        if self.order == "cyclic":
            return period % n
        if self.order == "descending":
            return n - 1 - period % n
        if self.order == "flip-flop":
            position = period % (2 * n)
            return position if position < n else 2 * n - 1 - position
        if self.order == "random-permutation":
            return int(self._sweep_permutation(period // n)[period % n])
        generator = make_generator(mix_seed(self.seed, _DRAW_STREAM, period), "cpu")
        if self.order == "uniform":
            return int(torch.randint(n, (1,), generator=generator))
        assert self.weights is not None
        return int(torch.multinomial(self.weights, 1, generator=generator))

    def _sweep_permutation(self, sweep: int) -> torch.Tensor:
        if self._permutation is None or self._permutation[0] != sweep:
            generator = make_generator(mix_seed(self.seed, _PERMUTATION_STREAM, sweep), "cpu")
            self._permutation = (sweep, torch.randperm(self.num_blocks, generator=generator))
        return self._permutation[1]


def check_order(order: str) -> None:
    check_choice(order, BlockOrder, "order")


def check_steps_per_block(steps_per_block: int) -> None:
    check_int_at_least(steps_per_block, 1, "steps_per_block")
