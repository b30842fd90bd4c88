"""``StructureCallback``: the base of callbacks that install one part of the module's perturbation structure."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from zolightning.module import ZOLightningModule, sharded_strategy_name


class StructureCallback(Callback):
    """Installs a selection (which tensors are active) or a direction rule (how z is formed) on a
    :class:`~zolightning.ZOLightningModule` in ``setup``, and refuses a second callback claiming the same part.

    Subclasses set :attr:`part` and implement :meth:`build`. State is the installed part's ``state_dict`` unless a
    subclass keeps its own (override :meth:`state_dict` and :meth:`_apply_state`).
    """

    part: ClassVar[str]

    def __init__(self) -> None:
        self._pending_state: Mapping[str, Any] | None = None
        self._module: ZOLightningModule | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        name = type(self).__name__
        if not isinstance(pl_module, ZOLightningModule):
            raise TypeError(
                f"{name} shapes zeroth-order perturbations; it needs a ZOLightningModule (subclass it, or wrap the "
                f"module with `zolightning.as_zo`), got {type(pl_module).__name__}."
            )
        if sharded_strategy_name(trainer.strategy) is not None:
            strategy = type(trainer.strategy).__name__
            raise ValueError(
                f"{name} needs each parameter whole and under its own name, which {strategy} does not keep. "
                "Use a single device or a DDP strategy ('ddp', 'ddp_spawn', 'ddp_fork')."
            )
        structure = pl_module.zo_structure
        owner = structure.owners.get(self.part)
        if owner is not None and owner is not self:
            raise ValueError(
                f"{name} and {type(owner).__name__} both set the perturbation {self.part}; they do not compose. "
                "Keep one of them (a block rotation composes with one sparse or low-rank callback)."
            )
        setattr(structure, self.part, self.build(trainer, pl_module))
        structure.owners[self.part] = self
        self._module = pl_module
        if self._pending_state is not None:
            self._apply_state(self._pending_state)
            self._pending_state = None

    @abstractmethod
    def build(self, trainer: pl.Trainer, pl_module: ZOLightningModule) -> Any:
        """The part to install (a ``TensorSelection`` or a ``DirectionRule``)."""

    @override
    def state_dict(self) -> dict[str, Any]:
        """The installed part's own ``state_dict`` (a direction rule's masks or factors, by parameter name)."""
        if self._module is None:
            return dict(self._pending_state or {})
        return self.installed().state_dict()

    def _apply_state(self, state: Mapping[str, Any]) -> None:
        """Load checkpointed state into the installed part, placing tensors on their parameters' devices."""
        assert self._module is not None
        devices = {name: p.device for name, p in self._module.named_parameters()}
        self.installed().load_state_dict(state, devices)

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callback state after ``setup``; a state given before setup waits for it.
        if self._module is None:
            self._pending_state = state_dict
        else:
            self._apply_state(state_dict)

    def installed(self) -> Any:
        """The part this callback installed (raises before ``setup``)."""
        if self._module is None:
            raise RuntimeError(f"{type(self).__name__} is not set up yet.")
        return getattr(self._module.zo_structure, self.part)
