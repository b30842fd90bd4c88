"""The command line: ``LightningCLI`` with YAML configs, OmegaConf interpolation and the model in subclass mode.

``zolightning fit --config configs/mezo.yaml`` (or ``python train.py …``) trains; ``zolightning fit`` alone runs the
default demo (``configs/demo.yaml``); ``zolightning fit --config mezo`` names a shipped recipe from any directory, and
``zolightning recipes`` lists them (:mod:`zolightning.recipes`). Any ``ZOLightningModule`` subclass and any
``LightningDataModule`` can be named by ``class_path``, including the user's own, imported from the working
directory; the optimizer comes from the ``optimizer:`` section (e.g. ``zolightning.optim.ZOSGD``) or from the model's
``configure_optimizers``. The exit status is 0 after a successful run, 2 for an argument error (one short line, see
:mod:`zolightning.cli_errors`) and 1 for a failed run.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from argparse import RawDescriptionHelpFormatter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import DefaultHelpFormatter, set_parsing_settings
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from typing_extensions import override

from zolightning.callbacks.zo_progress_bar import ZOProgressBar
from zolightning.cli_errors import innermost_instantiation_error, innermost_parse_error
from zolightning.module import ZOLightningModule
from zolightning.recipes import RECIPES, RecipeNotFound, format_recipes, with_recipes

DESCRIPTION = """Zeroth-order (MeZO-style) training with Lightning: forward passes only, memory close to inference.

  zolightning fit                                      the demo (configs/demo.yaml)
  zolightning fit --config configs/mezo_bcd.yaml       a recipe (MeZO-BCD), by its path
  zolightning fit --config mezo_bcd                    a shipped recipe by name, from any directory
  zolightning recipes                                  the shipped recipes, one line each
  zolightning fit --model mine.MyZOModule --data mine.MyData   your own classes, imported from this folder
  zolightning fit --config run.yaml --ckpt_path CKPT   resume exactly, mid-epoch included

ZO settings are the model's `zo:` key (--model.init_args.zo.seed, .estimator, .num_directions, .restore,
.accumulate_batches, .clip, .eps_schedule, .lr_scales, ...; see zolightning.ZOConfig). The optimizer owns lr and eps:
--optimizer zolightning.optim.ZOSGD --optimizer.lr 1e-6 --optimizer.eps 1e-3. Structures are callbacks under
--trainer.callbacks (BlockRotation, SparsityMask, LowRankRefresh, StructureCallback).
"""

# Shipped inside the package (`configs/` of the repository links to it), so that a wheel install finds it too.
DEFAULT_CONFIG = RECIPES / "demo.yaml"


class _HelpFormatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's lines kept as written."""


class ZOArgumentParser(LightningArgumentParser):
    """Lightning's parser, whose errors say the innermost problem in one line (see :mod:`zolightning.cli_errors`)
    instead of jsonargparse's nested report of every subtype tried."""

    @override
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # A class's own parser, nested in a Union, raises to its parent (`exit_on_error` off), whose report nests
        # them all: only the parser that prints reads the whole report for its innermost problem.
        super().error(innermost_parse_error(message) if self.exit_on_error else message, ex)


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
            **{"parser_class": ZOArgumentParser, **kwargs},
        )

    @override
    def instantiate_classes(self) -> None:
        """Lightning's, except that a model's or data module's ``__init__`` refusing a value ends the run like an
        argument error (its own message, exit status 2), not with jsonargparse's nested report in a traceback."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            innermost = innermost_instantiation_error(error)
            if innermost is None:
                raise
            message, cause = innermost
            if not isinstance(cause, (ValueError, TypeError)):
                raise cause from None  # a bug in the class rather than a refused value: its own traceback helps
            # The subcommand's parser, so that the usage line and the tip are those of `fit`.
            getattr(self, "_subcommand_parsers", {}).get(self.subcommand, self.parser).error(message)


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


def _prepare(args: Sequence[str]) -> list[str]:
    """``args`` with the default demo config and shipped recipes' paths filled in; a ``--config`` naming neither a
    file nor a recipe exits with status 2 (as an argument error does), listing the recipes."""
    try:
        return with_recipes(with_default_config(args))
    except RecipeNotFound as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def main(args: Sequence[str] | None = None) -> ZOLightningCLI | None:
    """The CLI from Python: ``args`` (default: the command line) run, and the finished :class:`ZOLightningCLI`
    returned (``None`` for ``recipes``, which only prints the shipped recipes). Modules in the working directory can
    be named by class path. Argument errors raise ``SystemExit(2)``; a failing run raises its exception."""
    quiet_upstream_noise()
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    given = list(sys.argv[1:] if args is None else args)
    if given[:1] == ["recipes"]:
        print(format_recipes())
        return None
    if args is not None:
        return ZOLightningCLI(args=_prepare(given))
    # Read from the command line (not passed as `args`, which LightningCLI warns about beside a command line).
    sys.argv = [sys.argv[0], *_prepare(given)]
    return ZOLightningCLI()


def console_main(args: Sequence[str] | None = None) -> int:
    """The ``zolightning`` command, ``train.py`` and ``python -m zolightning.cli``: :func:`main`, then exit status 0.
    Only success returns: argument errors exit with status 2 and a failing run's exception exits with 1 (its
    traceback printed), so that scripts and the multi-seed driver can trust the status."""
    main(args)
    return 0


if __name__ == "__main__":
    sys.exit(console_main())
