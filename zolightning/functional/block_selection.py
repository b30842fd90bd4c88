"""Block coordinate selection: one block of tensors active per step (MeZO-BCD)."""

from __future__ import annotations

from collections.abc import Sequence

from zolightning.functional.block_schedule import BlockSchedule
from zolightning.functional.structure import TensorSelection, TrainableTensor


class BlockSelection(TensorSelection):
    """The tensors of the block the schedule names at each step.

    Args:
        members: for each block, the names of its parameters.
        schedule: which block is active at each step.
        lr_scales: a learning-rate multiplier per block (default 1 for all).
    """

    def __init__(
        self, members: Sequence[Sequence[str]], schedule: BlockSchedule, lr_scales: Sequence[float] | None = None
    ) -> None:
        if len(members) != schedule.num_blocks:
            raise ValueError(f"{len(members)} blocks but the schedule has {schedule.num_blocks}.")
        if lr_scales is not None and len(lr_scales) != len(members):
            raise ValueError(f"{len(lr_scales)} lr scales for {len(members)} blocks.")
        self.members = [frozenset(names) for names in members]
        self.schedule = schedule
        self.lr_scales = list(lr_scales) if lr_scales is not None else [1.0] * len(members)

    def select(self, tensors: Sequence[TrainableTensor], step: int) -> list[tuple[TrainableTensor, float]]:
        block = self.schedule.block_at(step)
        names, scale = self.members[block], self.lr_scales[block]
        return [(tensor, scale) for tensor in tensors if tensor.name in names]

    def __repr__(self) -> str:
        return f"BlockSelection(blocks={len(self.members)}, order={self.schedule.order!r})"
