"""Per-block views of a ZO run: which block each step perturbed (and how hard), how far each block moved."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from zolightning.diagnostics.images import activity_image
from zolightning.engine import collectives
from zolightning.engine.shards import is_sharded, local_part
from zolightning.functional.blocks import Block, partition_blocks
from zolightning.structures.base import PerturbationStructure, TrainableTensor


def diagnostic_blocks(structure: PerturbationStructure, module: nn.Module, granularity: str = "layer") -> list[Block]:
    """The blocks to report on: the block selection's own (MeZO-BCD), else the model's ``granularity`` partition of
    its trainable parameters."""
    blocks = getattr(structure.selection, "blocks", None)
    if blocks and all(isinstance(block, Block) for block in blocks):
        return list(blocks)
    return partition_blocks(module, granularity)


class BlockActivity:
    """A rolling record of the last ``window`` steps: per block, |projected gradient| if it was active, else NaN.

    Recording a step costs one selection call (no noise, no forward): the selection is a pure function of the step.
    """

    def __init__(self, blocks: Sequence[Block], tensors: Sequence[TrainableTensor], window: int = 256) -> None:
        self.blocks = list(blocks)
        self.tensors = list(tensors)
        self.block_of = {name: index for index, block in enumerate(self.blocks) for name in block.param_names}
        self.columns: deque[Tensor] = deque(maxlen=window)
        self.first_step: int | None = None

    def record(self, structure: PerturbationStructure, step: int, projected_gradient: float) -> None:
        active = {self.block_of[t.name] for t in structure.selection.select(self.tensors, step) if t.name in self.block_of}
        column = torch.full((len(self.blocks),), math.nan, dtype=torch.float64)
        column[sorted(active)] = abs(projected_gradient)
        self.columns.append(column)
        if self.first_step is None or len(self.columns) == self.columns.maxlen:
            self.first_step = step - len(self.columns) + 1

    def image(self) -> Tensor | None:
        """uint8 (H × W × 3): rows are blocks, columns the recorded steps, oldest left (``None`` before any step)."""
        if not self.columns:
            return None
        return activity_image(torch.stack(list(self.columns), dim=1))


class BlockMotion:
    """Per-block update norms (from a copy of the step's active tensors taken just before it) and distances from the
    initial weights (from a CPU copy of every trainable tensor, kept for the run when ``track_distance``).

    With sharded (FSDP2) parameters each rank copies its own shards, and every rank must call :meth:`update_norms`
    and :meth:`distances` together: the per-block sums of squares are added over ranks (one all-reduce)."""

    def __init__(self, blocks: Sequence[Block], tensors: Sequence[TrainableTensor], track_distance: bool) -> None:
        self.blocks = list(blocks)
        self.params = {t.name: t.param for t in tensors}
        self.sharded = any(is_sharded(p) for p in self.params.values())
        self.initial = (
            {name: local_part(p).detach().to("cpu", copy=True) for name, p in self.params.items()} if track_distance else None
        )
        self.before: dict[str, Tensor] | None = None

    def snapshot(self, names: Iterable[str]) -> None:
        """Copy ``names`` (the step's active tensors) before the step."""
        self.before = {name: local_part(self.params[name]).detach().clone() for name in names if name in self.params}

    def update_norms(self) -> dict[str, float] | None:
        """‖θ_after − θ_before‖ per block touched since :meth:`snapshot` (then forgets the copy)."""
        if self.before is None:
            return None
        norms = self._norms(lambda name: self.before.get(name) if self.before is not None else None)
        self.before = None
        return norms

    def distances(self) -> dict[str, float] | None:
        """‖θ − θ_initial‖ per block (``None`` without ``track_distance``)."""
        if self.initial is None:
            return None
        initial = self.initial
        return self._norms(lambda name: initial.get(name))

    def _norms(self, reference_of: Callable[[str], Tensor | None]) -> dict[str, float]:
        totals: dict[str, float] = {}
        for block in self.blocks:
            total, seen = 0.0, False
            for name in block.param_names:
                reference = reference_of(name)
                if reference is None or name not in self.params:
                    continue
                seen = True
                current = local_part(self.params[name]).detach()
                total += float((current.double() - reference.to(current.device).double()).square().sum())
            if seen:
                totals[block.name] = total
        if self.sharded and totals:  # the same blocks on every rank: each holds a part of every sum
            summed = collectives.sum_over_ranks(torch.tensor(list(totals.values()), dtype=torch.float64))
            totals = dict(zip(totals, summed.tolist()))
        return {name: math.sqrt(total) for name, total in totals.items()}
