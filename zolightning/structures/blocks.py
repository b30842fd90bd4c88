"""``BlockSelection``: block coordinate descent, one block of tensors active per step (MeZO-BCD, arXiv 2501.19099)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from typing_extensions import override

from zolightning.structures.block_schedule import BlockOrder, BlockSchedule, check_order, check_steps_per_block
from zolightning.functional.blocks import Block, Granularity, check_granularity, partition_blocks
from zolightning.functional.checks import compile_patterns
from zolightning.functional.noise import Distribution
from zolightning.structures.base import TensorSelection, TrainableTensor


class BlockSelection(TensorSelection):
    """The tensors of one block per step, the block following a schedule.

    The per-step noise generation and in-place work shrink from the whole model to the active block, while the two
    forwards stay (MeZO-BCD reports up to 2.09× (v1) and 2.77× (v2, OPT-13B) faster iterations than MeZO). With
    ``zo.restore: auto`` the active block is restored from a copy (it is small), exactly, in any dtype.

    Args:
        granularity: ``layer`` (default: one block per repeated layer; embeddings, final norm and head on their own),
            ``sublayer`` (attention / MLP), ``linear`` (one block per module owning parameters) or ``parameter``.
        order: ``cyclic`` (default), ``descending``, ``flip-flop``, ``random-permutation``, ``uniform`` or
            ``size-weighted`` (see :mod:`zolightning.structures.block_schedule`).
        steps_per_block: consecutive steps on one block (default 1).
        patterns: regexes that define blocks instead of ``granularity``: a parameter joins the first pattern that
            matches its name, the block being the matched text (``r"layers\\.\\d+"`` gives one block per layer).
        seed: seeds the random orders, overriding ``zo.seed`` (default ``None``: ``zo.seed``).
        blocks: explicit blocks, as lists of parameter names, instead of partitioning a model (e.g. without one).

    State: the blocks (names with their parameter names) and the schedule's settings. Every order is a pure function
    of (seed, step), so a resumed run continues the same schedule; blocks are restored by parameter name.
    """

    prefers_snapshot = True

    def __init__(
        self,
        granularity: Granularity = "layer",
        order: BlockOrder = "cyclic",
        steps_per_block: int = 1,
        patterns: Sequence[str] | None = None,
        seed: int | None = None,
        blocks: Sequence[Sequence[str]] | None = None,
    ) -> None:
        check_granularity(granularity)
        check_order(order)
        check_steps_per_block(steps_per_block)
        compile_patterns(patterns or [], "patterns")
        self.granularity: Granularity = granularity
        self.order: BlockOrder = order
        self.steps_per_block = steps_per_block
        self.patterns = list(patterns) if patterns is not None else None
        self.seed = seed
        self.named_blocks = [list(names) for names in blocks] if blocks is not None else None
        self.blocks: list[Block] = [
            Block(f"block{i}", tuple(names), 0) for i, names in enumerate(blocks or [])
        ]
        self._schedule: BlockSchedule | None = None
        self._members: list[frozenset[str]] = []
        if self.blocks:
            self._rebuild()

    def bind(self, module: nn.Module | None, seed: int, distribution: Distribution) -> None:
        super().bind(module, seed, distribution)
        if module is not None and not self.blocks:
            self.blocks = partition_blocks(module, self.granularity, self.patterns)
        if not self.blocks:
            raise ValueError("BlockSelection needs a model to partition (install it with `module=`) or `blocks`.")
        self._rebuild()

    def _rebuild(self) -> None:
        sizes = [max(block.numel, 1) for block in self.blocks]
        self._schedule = BlockSchedule(len(self.blocks), self.order, self.steps_per_block, self.seed_in_use(), sizes)
        self._members = [frozenset(block.param_names) for block in self.blocks]

    @property
    def schedule(self) -> BlockSchedule:
        if self._schedule is None:
            raise RuntimeError("BlockSelection is not bound yet: install it on an engine first.")
        return self._schedule

    def active_index(self, step: int) -> int:
        return self.schedule.block_at(step)

    def active_block(self, step: int) -> Block:
        """The block active at ``step``."""
        return self.blocks[self.active_index(step)]

    @override
    def block_sizes(self) -> list[int] | None:
        sizes = [block.numel for block in self.blocks]
        return sizes if sizes and all(size > 0 for size in sizes) else None  # blocks given by name carry no size

    def select(self, tensors: Sequence[TrainableTensor], step: int) -> list[TrainableTensor]:
        names = self._members[self.active_index(step)]
        return [tensor for tensor in tensors if tensor.name in names]

    def config(self) -> dict[str, Any]:
        return {"granularity": self.granularity, "order": self.order, "steps_per_block": self.steps_per_block,
                "patterns": self.patterns, "seed": self.seed, "blocks": self.named_blocks}

    def state_dict(self) -> dict[str, Any]:
        return {
            "blocks": [[block.name, list(block.param_names), block.numel] for block in self.blocks],
            "order": self.order,
            "steps_per_block": self.steps_per_block,
        }

    def load_state_dict(self, state: Mapping[str, Any], device_of: Mapping[str, torch.device] | None = None) -> None:
        if device_of is not None:
            missing = set(device_of) - {name for _, params, _ in state["blocks"] for name in params}
            if missing:
                raise ValueError(
                    f"The checkpoint's blocks do not cover trainable parameters {sorted(missing)[:5]}; the model's "
                    "trainable parameters changed since it was saved."
                )
        self.blocks = [Block(name, tuple(params), int(numel)) for name, params, numel in state["blocks"]]
        self.order = state["order"]
        self.steps_per_block = int(state["steps_per_block"])
        self._rebuild()  # older checkpoints also hold the seed in use: `zo.seed` (or the rule's `seed`) owns it

    def __repr__(self) -> str:
        return f"BlockSelection(blocks={len(self.blocks)}, order={self.order!r})"
