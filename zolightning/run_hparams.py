"""The run's hyperparameters as one TensorBoard hparams header, with the run's final metrics as its columns.

TensorBoard's HPARAMS tab reads, per run, the first hparams header (a session-start record: the hyperparameters;
an experiment record: which hyperparameters and metrics are columns) and hides any later one. Lightning writes a
header of the module's and data module's init arguments right after ``on_fit_start``, and every other
``log_hyperparams`` call writes another, so a ZO run that also logged its optimizer settings showed only whichever
came first. Here a ZO fit writes one header with everything:

- the module's hyperparameters (what ``save_hyperparameters`` kept, and ``zo/…``, the ZO settings),
- the data module's hyperparameters,
- ``optimizer/…``: the optimizer's class and first param group as the run used them (its lr, not ``zo:``'s default),

and Lightning's own header is held back for that fit. The session-start record is written at the start of the fit;
the experiment record, whose metric columns TensorBoard takes from it, at its end (:func:`register_final_metrics`),
when the metrics are known: every scalar the run logged except the per-step training curves
(:data:`PER_STEP_PREFIXES`), so ``val…``, ``test…``, ``dev/…``, ``hp_metric`` and ZODiagnostics' ``hp/…`` all
become columns, showing their last value; each ``val…`` name also gets its ``test…`` twin, for a ``trainer.test``
after the fit. Until then (or if the fit fails) TensorBoard lists the hyperparameters with every scalar as a column.
Loggers other than TensorBoard's get the same hyperparameters once, through ``log_hyperparams``.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import Logger, TensorBoardLogger

# A leading "val"/"validation" word, after ZODiagnostics' "hp/" if any ("val/acc", "val_loss", "hp/val/loss"; not
# "value" or "valid_tokens").
_VALIDATION_WORD = re.compile(r"^(hp/)?(?:val|validation)(?=[/_.\-])")

__all__ = [
    "PER_STEP_PREFIXES",
    "final_metric_names",
    "hold_lightning_hparams",
    "log_run_hparams",
    "optimizer_hparams",
    "register_final_metrics",
    "run_hparams",
]

PER_STEP_PREFIXES = ("train", "diagnostics", "epoch")
"""Scalars that are curves over the steps (the step's loss, lr, timings, ZODiagnostics' measurements), not results
to compare runs by: they are not hparams columns."""

# Loggers this process gave a ZO header → the flat hyperparameters of that header (TensorBoard needs them again for
# the experiment record at the end; `None` once that is written or for other loggers).
_HEADERS: weakref.WeakKeyDictionary[Logger, dict[str, Any] | None] = weakref.WeakKeyDictionary()
# Modules and data modules whose Lightning hparams logging is held back → their own setting, to give back.
_HELD: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def optimizer_hparams(optimizer: Any) -> dict[str, Any]:
    """``{"class": …, **first param group}``: the scalar settings of the optimizer as the run uses them (for a plain
    torch optimizer, ``zo_eps``, the ε of its ZO estimates, is one of its group's settings)."""
    group = {k: v for k, v in optimizer.param_groups[0].items() if isinstance(v, (int, float, str, bool, tuple))}
    return {"class": type(optimizer).__name__, **group}


def run_hparams(module: LightningModule, optimizer: dict[str, Any]) -> dict[str, Any]:
    """Everything the header shows, nested: the module's hyperparameters (``zo`` included), the data module's, and
    ``optimizer``. A data module key that the module also has with another value is kept as ``data/<key>``; keys
    starting with ``_`` (LightningCLI's ``_class_path``, ``_instantiator``) are left out."""
    params = _public(module.hparams)
    datamodule = getattr(module.trainer, "datamodule", None)
    for key, value in _public(getattr(datamodule, "hparams", {}) or {}).items():
        if key in params and _differs(params[key], value):
            params[f"data/{key}"] = value
        else:
            params[key] = value
    params["optimizer"] = optimizer
    return params


def log_run_hparams(module: LightningModule, optimizer: dict[str, Any]) -> None:
    """At the start of a fit (the module's ``on_fit_start``): write the run's one header to every logger, and hold back
    Lightning's own, which would follow right after this hook."""
    trainer = module.trainer
    if not getattr(trainer, "enable_autolog_hparams", True):
        return  # the user turned hyperparameter logging off: neither header is written
    _hold(module, getattr(trainer, "datamodule", None), held=True)
    if not trainer.is_global_zero:
        return
    params = run_hparams(module, optimizer)
    for logger in trainer.loggers:
        if logger in _HEADERS:
            continue  # a second fit into the same logger: its header is written already
        if isinstance(logger, TensorBoardLogger):
            _HEADERS[logger] = _start_tensorboard(logger, params)
        else:
            logger.log_hyperparams(params)
            _HEADERS[logger] = None


def hold_lightning_hparams(module: LightningModule, stage: str) -> None:
    """At ``setup`` of a run that is not a fit (test, validate, predict): hold Lightning's header back where every
    logger already has this module's (a ``trainer.test`` after the fit: its header would hide nothing but write
    ``hp_metric = -1`` over the fit's), else give Lightning its own setting back."""
    if stage == "fit":
        return  # decided at `on_fit_start`, which writes the header
    trainer = module.trainer
    ours = bool(trainer.loggers) and all(logger in _HEADERS for logger in trainer.loggers)
    _hold(module, getattr(trainer, "datamodule", None), held=ours)


def register_final_metrics(module: LightningModule) -> None:
    """At the end of a fit (the module's ``on_fit_end``, after every callback's): write the experiment record of each
    TensorBoard header, whose metric columns are the scalars the run logged (:data:`PER_STEP_PREFIXES` aside)."""
    trainer = module.trainer
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        params = _HEADERS.get(logger)
        if params is None or not isinstance(logger, TensorBoardLogger):
            continue
        names = _logged_scalars(logger) | set(trainer.callback_metrics)
        _finish_tensorboard(logger, params, final_metric_names(names))
        _HEADERS[logger] = None


def final_metric_names(names: Iterable[str]) -> list[str]:
    """The hparams columns among the scalar names ``names``: all but the per-step curves, plus the ``test`` twin of
    each ``val`` name (``val/acc`` → ``test/acc``, ``hp/val/loss`` → ``hp/test/loss``), sorted."""
    kept = {name for name in names if not name.startswith(PER_STEP_PREFIXES) and not name.startswith("_hparams_")}
    twins = {_test_twin(name) for name in kept}
    return sorted(kept | {twin for twin in twins if twin is not None})


def _test_twin(name: str) -> str | None:
    twin, count = _VALIDATION_WORD.subn(r"\1test", name)
    return twin if count else None


def _differs(first: Any, second: Any) -> bool:
    try:
        return bool(first != second)
    except (RuntimeError, ValueError):  # tensors and arrays of several elements have no single truth value
        return first is not second


def _public(hparams: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in dict(hparams).items() if not str(k).startswith("_")}


def _hold(module: LightningModule, datamodule: Any, held: bool) -> None:
    """Set Lightning's per-run hparams logging of ``module`` and ``datamodule`` off (``held``) or back to its own."""
    for owner in (module, datamodule):
        if owner is None or not hasattr(owner, "_log_hyperparams"):
            continue
        if owner not in _HELD:
            _HELD[owner] = bool(owner._log_hyperparams)
        owner._log_hyperparams = False if held else _HELD[owner]


def _start_tensorboard(logger: TensorBoardLogger, params: dict[str, Any]) -> dict[str, Any]:
    """Write the session-start record of ``params``; returns them flat, as written."""
    from torch.utils.tensorboard.summary import hparams

    # `metrics={}` makes the logger keep the hyperparameters (for its hparams.yaml) without writing a header.
    logger.log_hyperparams(params, metrics={})
    flat = logger._sanitize_params(_flatten_dict(_convert_params(params)))
    _, start, _ = hparams(flat, {})
    logger.experiment._get_file_writer().add_summary(start)
    return flat


def _finish_tensorboard(logger: TensorBoardLogger, flat: dict[str, Any], metrics: list[str]) -> None:
    """Write the experiment record (the columns: ``flat``'s keys and ``metrics``) and the session-end record."""
    from torch.utils.tensorboard.summary import hparams

    experiment, _, end = hparams(flat, dict.fromkeys(metrics, 0.0))
    writer = logger.experiment._get_file_writer()
    writer.add_summary(experiment)
    writer.add_summary(end)
    logger.experiment.flush()


def _logged_scalars(logger: TensorBoardLogger) -> set[str]:
    """The scalar tags in ``logger``'s event files: what the run logged, whoever logged it (``self.log``, or a
    callback through ``logger.log_metrics``). Empty without the ``tensorboard`` package (tensorboardX alone)."""
    try:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    except ModuleNotFoundError:
        return set()
    logger.experiment.flush()
    tags: set[str] = set()
    for path in sorted(Path(logger.log_dir).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            # The loader migrates old-style `simple_value` scalars to tensors marked with the scalars plugin.
            tags.update(
                value.tag for value in event.summary.value
                if value.HasField("simple_value") or value.metadata.plugin_data.plugin_name == "scalars"
            )
    return tags
