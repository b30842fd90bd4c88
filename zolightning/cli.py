"""The command line: ``LightningCLI`` with YAML configs, OmegaConf interpolation and the model in subclass mode.

``zolightning fit --config configs/mezo.yaml`` (or ``python train.py …``) trains; ``zolightning fit`` alone runs the
default demo (``configs/demo.yaml``). Any ``ZOLightningModule`` subclass and any ``LightningDataModule`` can be named
by ``class_path``, including the user's own, imported from the working directory; the optimizer comes from the
``optimizer:`` section (e.g. ``zolightning.optim.ZOSGD``) or from the model's ``configure_optimizers``.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from argparse import RawDescriptionHelpFormatter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import DefaultHelpFormatter, set_parsing_settings
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from typing_extensions import override

from zolightning.callbacks.zo_progress_bar import ZOProgressBar
from zolightning.module import ZOLightningModule

DESCRIPTION = """Zeroth-order (MeZO-style) training with Lightning: forward passes only, memory close to inference.

  zolightning fit                                      the demo (configs/demo.yaml)
  zolightning fit --config configs/mezo_bcd.yaml       a recipe (MeZO-BCD)
  zolightning fit --model mine.MyZOModule --data mine.MyData   your own classes, imported from this folder
  zolightning fit --config run.yaml --ckpt_path CKPT   resume exactly, mid-epoch included

ZO settings are the model's `zo:` key (--model.init_args.zo.seed, .estimator, .num_directions, .restore,
.accumulate_batches, .clip, .eps_schedule, .lr_scales, ...; see zolightning.ZOConfig). The optimizer owns lr and eps:
--optimizer zolightning.optim.ZOSGD --optimizer.lr 1e-6 --optimizer.eps 1e-3. Structures are callbacks under
--trainer.callbacks (BlockRotation, SparsityMask, LowRankRefresh, StructureCallback).
"""

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


class _HelpFormatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's lines kept as written."""


class ZOLightningCLI(LightningCLI):
    """``LightningCLI`` for ZO training: subclass mode for model and data, ``parser_mode="omegaconf"``, and a run's
    ``config.yaml`` written next to its TensorBoard events."""

    def __init__(self, args: Sequence[str] | None = None, **kwargs: Any) -> None:
        # `fit --help` opens with what ZO needs, not with a usage line listing every Trainer flag.
        help_text = {"description": DESCRIPTION, "formatter_class": _HelpFormatter}
        fit = {**help_text, "usage": "%(prog)s [-h] [-c CONFIG] [--print_config] [--<section>.<key> VALUE ...]"}
        # `omegaconf+` resolves `${...}` after every argument is parsed, so `--seed_everything 3` on the command line
        # reaches every `${seed_everything}` of the config (plain `omegaconf` resolves each file as it loads, with the
        # file's own value). Relative paths keep the configs' `${seed_everything}` meaning the top-level key.
        set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
        parser_kwargs = {"parser_mode": "omegaconf+", **help_text, "fit": fit, **kwargs.pop("parser_kwargs", {})}
        super().__init__(
            ZOLightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_kwargs=parser_kwargs,
            args=args,
            **kwargs,
        )


    @staticmethod
    @override
    def configure_optimizers(
        lightning_module: LightningModule, optimizer: Optimizer, lr_scheduler: Any = None
    ) -> Any:
        """The ``optimizer:`` and ``lr_scheduler:`` sections, with the scheduler stepped after every optimizer step.

        ZO recipes are measured in steps (``max_steps``; an epoch of a 1000-example split is only 63 of them), so a
        ``CosineAnnealingLR`` with ``T_max: 300`` means 300 steps here, where plain ``LightningCLI`` would read epochs.
        ``ReduceLROnPlateau`` keeps Lightning's per-epoch checks on its ``monitor``.
        """
        if lr_scheduler is None or isinstance(lr_scheduler, ReduceLROnPlateau):
            return LightningCLI.configure_optimizers(lightning_module, optimizer, lr_scheduler)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step"}}

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with a progress bar that counts steps against ``max_steps`` and shows the ZO figures, unless
        the config turns the bar off or brings its own."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = list(config.get("callbacks") or [])
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs.setdefault("callbacks", [*callbacks, ZOProgressBar()])
        return super().instantiate_trainer(**kwargs)


def with_default_config(args: Sequence[str], default: Path = DEFAULT_CONFIG) -> list[str]:
    """Nothing becomes ``["fit", "--config", default]``; ``fit`` with no ``--config``, ``--model`` or ``--data`` gets
    ``default`` first, so that ``fit --trainer.max_steps 100`` overrides the demo. A run that names its own model or
    data never inherits the demo's; anything else is left as given."""
    args = list(args)
    if not args:
        return ["fit", "--config", str(default)]
    own = ("--config", "-c", "--model", "--data")  # a whole config, model or data of the user's own
    if args[0] == "fit" and not any(arg.split("=")[0] in own for arg in args[1:]):
        return ["fit", "--config", str(default), *args[1:]]
    return args


class _DropTips(logging.Filter):
    """Lightning's advertisement for another product's logger, which nothing in a ZO run can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_upstream_noise() -> None:
    """Silence upstream messages a user cannot act on, for command-line runs only (the library filters nothing)."""
    # Lightning's own use of a torch API that torch deprecated.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # In subclass mode the CLI's `optimizer:` section replacing the module's default optimizer is the intent.
    warnings.filterwarnings("ignore", message=r".*configure_optimizers` will be overridden")
    # torchdata's StatefulDataLoader calling a torch API that torch deprecated.
    warnings.filterwarnings("ignore", message=r"'set_vital' is deprecated")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())


def main(args: Sequence[str] | None = None) -> ZOLightningCLI:
    """Entry point of ``zolightning`` and ``train.py``. Modules in the working directory can be named by class path."""
    quiet_upstream_noise()
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if args is not None:
        return ZOLightningCLI(args=with_default_config(args))
    # Read from the command line (not passed as `args`, which LightningCLI warns about beside a command line).
    sys.argv = [sys.argv[0], *with_default_config(sys.argv[1:])]
    return ZOLightningCLI()


if __name__ == "__main__":
    main()
