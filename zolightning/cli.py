"""The command line: ``LightningCLI`` with YAML configs, OmegaConf interpolation and the model in subclass mode.

``python train.py fit --config configs/mezo.yaml`` trains; ``python train.py fit`` alone runs the default demo
(``configs/demo.yaml``). Any ``ZOLightningModule`` subclass and any ``LightningDataModule`` can be named by
``class_path``; the optimizer comes from the ``optimizer:`` section (e.g. ``zolightning.optim.ZOSGD``) or from the
model's ``configure_optimizers``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from zolightning.module import ZOLightningModule

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


class ZOLightningCLI(LightningCLI):
    """``LightningCLI`` for ZO training: subclass mode for model and data, ``parser_mode="omegaconf"``, and a run's
    ``config.yaml`` written next to its TensorBoard events."""

    def __init__(self, args: Sequence[str] | None = None, **kwargs: Any) -> None:
        parser_kwargs = {"parser_mode": "omegaconf", **kwargs.pop("parser_kwargs", {})}
        super().__init__(
            ZOLightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_kwargs=parser_kwargs,
            args=args,
            **kwargs,
        )


def with_default_config(args: Sequence[str], default: Path = DEFAULT_CONFIG) -> list[str]:
    """Nothing becomes ``["fit", "--config", default]``; ``fit`` without a ``--config`` gets ``default`` first, so that
    ``fit --trainer.max_steps 100`` overrides the demo; anything else is left as given."""
    args = list(args)
    if not args:
        return ["fit", "--config", str(default)]
    has_config = any(arg in ("--config", "-c") or arg.startswith("--config=") for arg in args)
    if args[0] == "fit" and not has_config:
        return ["fit", "--config", str(default), *args[1:]]
    return args


def main(args: Sequence[str] | None = None) -> ZOLightningCLI:
    """Entry point of ``train.py``."""
    return ZOLightningCLI(args=with_default_config(sys.argv[1:] if args is None else args))
