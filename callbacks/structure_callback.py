"""``StructureCallback``: installs any perturbation rule on a ZO module's step engine, and checkpoints its state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from zolightning.module import ZOLightningModule
from zolightning.structures.base import DirectionRule, StructureRule
from zolightning.trainer_checks import FSDP2_STRATEGY, sharded_strategy_name


class StructureCallback(Callback):
    """Install ``rule`` (a :class:`~zolightning.structures.TensorSelection` or
    :class:`~zolightning.structures.DirectionRule`) on the module's engine in ``setup``, and keep its state in
    checkpoints. Any rule works, so a new structure needs no callback of its own::

        trainer:
          callbacks:
            - class_path: zolightning.callbacks.StructureCallback
              init_args:
                rule:
                  class_path: zolightning.structures.LayerSubset     # LeZO
                  init_args: {active_layers: 0.25}

    Args:
        rule: the rule to install. Two callbacks cannot set the same part (selection or directions); a selection
            composes with one direction rule (a mask inside the active block, say).

    State: the rule's own ``state_dict`` (by parameter name). Lightning restores callback state after ``setup``;
    state given before it waits for it.
    """

    def __init__(self, rule: StructureRule) -> None:
        if not isinstance(rule, StructureRule):
            raise TypeError(
                f"`rule` must be a TensorSelection or DirectionRule from zolightning.structures, got {type(rule).__name__}."
            )
        self.rule = rule
        self._pending_state: Mapping[str, Any] | None = None
        self._module: ZOLightningModule | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(rule=type(self.rule).__name__)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        name = type(self).__name__
        if not isinstance(pl_module, ZOLightningModule):
            raise TypeError(
                f"{name} shapes zeroth-order perturbations; it needs a ZOLightningModule (subclass it, or wrap the "
                f"module with `zolightning.as_zo`), got {type(pl_module).__name__}."
            )
        sharded = sharded_strategy_name(trainer.strategy)
        strategy = type(trainer.strategy).__name__
        # Under FSDP2 a selection (blocks, layers) picks whole parameters by name and each rank moves its shards; a
        # direction rule (sparse masks, low-rank factors) needs each matrix whole.
        if sharded == FSDP2_STRATEGY and isinstance(self.rule, DirectionRule):
            raise ValueError(
                f"{name} ({type(self.rule).__name__}) needs each weight matrix whole, which {strategy} shards. Under "
                "it, use BlockRotation or dense MeZO; for sparse or low-rank perturbations, use a single device or a "
                "DDP strategy ('ddp', 'ddp_spawn', 'ddp_fork')."
            )
        if sharded is not None and sharded != FSDP2_STRATEGY:
            raise ValueError(
                f"{name} needs each parameter whole and under its own name, which {strategy} does not keep. "
                "Use a single device, a DDP strategy ('ddp', 'ddp_spawn', 'ddp_fork'), or ModelParallelStrategy "
                "(FSDP2)."
            )
        pl_module.zo_engine.install(self.rule, module=pl_module, owner=self)
        self._module = pl_module
        if self._pending_state is not None:
            self._apply_state(self._pending_state)
            self._pending_state = None

    @override
    def state_dict(self) -> dict[str, Any]:
        if self._module is None:
            return dict(self._pending_state or {})
        return self.rule.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._module is None:
            self._pending_state = state_dict
        else:
            self._apply_state(state_dict)

    def _apply_state(self, state: Mapping[str, Any]) -> None:
        assert self._module is not None
        devices = {name: p.device for name, p in self._module.named_parameters() if p.requires_grad}
        self.rule.load_state_dict(state, devices)
