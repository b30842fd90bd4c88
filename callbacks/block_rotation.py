"""``BlockRotation``: MeZO-BCD, zeroth-order block coordinate descent (arXiv 2501.19099), as a callback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from typing_extensions import override

from zolightning.callbacks.structure_callback import StructureCallback
from zolightning.structures.block_schedule import BlockOrder
from zolightning.functional.blocks import Block, Granularity
from zolightning.structures.blocks import BlockSelection


class BlockRotation(StructureCallback):
    """Perturb and update one block of parameters per step, rotating through the blocks: installs a
    :class:`~zolightning.structures.BlockSelection` (see it for the arguments, each validated here).

    With ``zo.restore: auto`` (the default) the active block is restored from an exact copy, in any dtype;
    ``zo.restore: arithmetic`` saves that copy in fp32 (e.g. OPT-125m's 154 MiB embedding block) at the cost of fp32
    rounding in the restore. Per-block learning rates come from ``zo.lr_scales`` (parameter-name regexes).

    Args:
        granularity: ``layer`` (default), ``sublayer``, ``linear`` or ``parameter``.
        order: ``cyclic`` (default), ``descending``, ``flip-flop``, ``random-permutation``, ``uniform`` or
            ``size-weighted``.
        steps_per_block: consecutive steps on one block (default 1).
        patterns: regexes that define blocks instead of ``granularity``.
        seed: seeds the random orders (default: ``zo.seed``).
        log_active_block: log ``train/active_block`` (the block index) each step.
    """

    def __init__(
        self,
        granularity: Granularity = "layer",
        order: BlockOrder = "cyclic",
        steps_per_block: int = 1,
        patterns: Sequence[str] | None = None,
        seed: int | None = None,
        log_active_block: bool = True,
    ) -> None:
        super().__init__(BlockSelection(granularity, order, steps_per_block, patterns, seed))
        self.log_active_block = log_active_block

    @property
    @override
    def state_key(self) -> str:
        rule = self.selection
        return self._generate_state_key(granularity=rule.granularity, order=rule.order, patterns=rule.patterns)

    @property
    def selection(self) -> BlockSelection:
        assert isinstance(self.rule, BlockSelection)
        return self.rule

    @property
    def blocks(self) -> list[Block]:
        return self.selection.blocks

    def active_block(self, step: int) -> Block:
        """The block active at optimizer step ``step``."""
        return self.selection.active_block(step)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # `train/active_block` is an index: loggers that take text (TensorBoard) get the names behind it once.
        rows = [f"| {i} | {block.name} | {block.numel} |" for i, block in enumerate(self.blocks)]
        legend = "\n".join(["| index | block | parameters |", "|---|---|---|", *rows])
        for logger in trainer.loggers:
            add_text = getattr(getattr(logger, "experiment", None), "add_text", None)
            if callable(add_text) and trainer.is_global_zero:
                add_text("train/active_block_names", legend, trainer.global_step)

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.log_active_block:
            index = self.selection.active_index(trainer.global_step)
            pl_module.log("train/active_block", float(index), on_step=True, on_epoch=False, batch_size=1)
