"""``BlockRotation``: MeZO-BCD, zeroth-order block coordinate descent (arXiv 2501.19099)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
from typing_extensions import override

from zolightning.callbacks.structure_callback import StructureCallback
from zolightning.functional.block_schedule import BlockOrder, BlockSchedule, check_order, check_steps_per_block
from zolightning.functional.block_selection import BlockSelection
from zolightning.functional.blocks import GRANULARITIES, Block, partition_blocks
from zolightning.module import ZOLightningModule


class BlockRotation(StructureCallback):
    """Perturb and update one block of parameters per step, rotating through the blocks.

    The per-step noise generation and in-place work shrink from the whole model to the active block, while the two
    forwards stay (MeZO-BCD reports up to 2.09× (v1) and 2.77× (v2, OPT-13B) faster iterations than MeZO). The active
    block is restored exactly from a snapshot (it is small), in any dtype, unless ``restore="auto"``.

    Args:
        granularity: ``layer`` (default: one block per repeated layer; embeddings, final norm and head on their own),
            ``sublayer`` (attention / MLP), ``linear`` (one block per module owning parameters) or ``parameter``.
        order: ``cyclic`` (default), ``descending``, ``flip-flop``, ``random-permutation``, ``uniform`` or
            ``size-weighted`` (see :mod:`zolightning.functional.block_schedule`).
        steps_per_block: consecutive steps on one block (default 1).
        patterns: regexes that define blocks instead of ``granularity``: a parameter joins the first pattern that
            matches its name, the block being the matched text (``r"layers\\.\\d+"`` gives one block per layer).
        lr_scales: ``{block-name regex: multiplier}`` on the learning rate; a block takes the first match, else 1.
        seed: seeds the random orders (default: the module's ``zo.seed``).
        log_active_block: log ``train/active_block`` (the block index) each step.
        restore: ``snapshot`` (default: an exact copy of the active block, held through both forwards; in any dtype)
            or ``auto`` (the module's ``zo.restore``: arithmetic in fp32, which saves that copy, e.g. OPT-125m's 154 MiB
            embedding block, at the cost of fp32 rounding in the restore).

    State: the partition (block names with their parameter names) and the schedule's settings and seed. Every order is
    a pure function of (seed, ``global_step``), so a resumed run continues the same schedule; blocks are restored by
    parameter name.
    """

    part = "selection"

    def __init__(
        self,
        granularity: str = "layer",
        order: BlockOrder = "cyclic",
        steps_per_block: int = 1,
        patterns: Sequence[str] | None = None,
        lr_scales: Mapping[str, float] | None = None,
        seed: int | None = None,
        log_active_block: bool = True,
        restore: Literal["snapshot", "auto"] = "snapshot",
    ) -> None:
        super().__init__()
        if restore not in ("snapshot", "auto"):
            raise ValueError(f"`restore` must be 'snapshot' or 'auto', got {restore!r}.")
        if granularity not in GRANULARITIES:
            raise ValueError(f"`granularity` must be one of {GRANULARITIES}, got {granularity!r}.")
        check_order(order)
        check_steps_per_block(steps_per_block)
        for pattern in list(patterns or []) + list(lr_scales or {}):
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"Invalid regex {pattern!r} in `patterns`/`lr_scales`: {error}.") from None
        for pattern, scale in (lr_scales or {}).items():
            if not scale >= 0:
                raise ValueError(f"`lr_scales[{pattern!r}]` must be >= 0, got {scale}.")
        self.granularity = granularity
        self.order: BlockOrder = order
        self.steps_per_block = steps_per_block
        self.patterns = list(patterns) if patterns is not None else None
        self.lr_scales = dict(lr_scales or {})
        self.seed = seed
        self.log_active_block = log_active_block
        self.restore: Literal["snapshot", "auto"] = restore
        self.blocks: list[Block] = []

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(granularity=self.granularity, order=self.order, patterns=self.patterns)

    @override
    def build(self, trainer: pl.Trainer, pl_module: ZOLightningModule) -> BlockSelection:
        self.blocks = partition_blocks(pl_module, self.granularity, self.patterns)
        if self.seed is None:
            self.seed = pl_module.zo_config.seed
        pl_module.zo_structure.restore = "snapshot" if self.restore == "snapshot" else None
        return self._selection()

    def _selection(self) -> BlockSelection:
        sizes = [block.numel for block in self.blocks]
        schedule = BlockSchedule(len(self.blocks), self.order, self.steps_per_block, int(self.seed or 0), sizes)
        scales = [self._lr_scale(block.name) for block in self.blocks]
        return BlockSelection([block.param_names for block in self.blocks], schedule, scales)

    def _lr_scale(self, block_name: str) -> float:
        for pattern, scale in self.lr_scales.items():
            if re.search(pattern, block_name):
                return float(scale)
        return 1.0

    def active_block(self, step: int) -> Block:
        """The block active at optimizer step ``step``."""
        selection: BlockSelection = self.installed()
        return self.blocks[selection.schedule.block_at(step)]

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.log_active_block:
            index = self.installed().schedule.block_at(trainer.global_step)
            pl_module.log("train/active_block", float(index), on_step=True, on_epoch=False, batch_size=1)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "blocks": [[block.name, list(block.param_names), block.numel] for block in self.blocks],
            "order": self.order,
            "steps_per_block": self.steps_per_block,
            "seed": self.seed,
        }

    def _apply_state(self, state: Mapping[str, Any]) -> None:
        assert self._module is not None
        trainable = {name for name, p in self._module.named_parameters() if p.requires_grad}
        saved = {name for _, params, _ in state["blocks"] for name in params}
        if trainable - saved:
            raise ValueError(
                f"The checkpoint's blocks do not cover trainable parameters {sorted(trainable - saved)[:5]}; the model's "
                "trainable parameters changed since it was saved."
            )
        self.blocks = [Block(name, tuple(params), int(numel)) for name, params, numel in state["blocks"]]
        self.order = state["order"]
        self.steps_per_block = int(state["steps_per_block"])
        self.seed = state["seed"]
        self._module.zo_structure.selection = self._selection()
