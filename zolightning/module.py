"""``ZOLightningModule``: a LightningModule whose training step is a zeroth-order step: its engine's ``measure``,
then its optimizer's ``apply``.

A subclass writes ``training_step`` exactly as for backprop, returning the loss (a scalar tensor, or a dict with
``"loss"``). The class wraps that method: when Lightning calls it, the module hands it, bound to the batch, to its
step engine as the objective, and applies the measurement through Lightning's wrapped optimizer (so
``global_step``, ``max_steps``, checkpointing, hooks and LR schedulers behave as with backprop). Validation and test
steps are untouched. The module only adapts Lightning to the two calls: it owns no step logic of its own.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor
from typing_extensions import override

from zolightning.config import ZOConfig
from zolightning.engine.measurement import Recorded, Update
from zolightning.engine.step import REENTRANT_STEP, StepEngine
from zolightning.functional.estimate import DirectionalEstimate
from zolightning.optim.gradient_update import GradientUpdate
from zolightning.optim.optimizer import ZOOptimizer
from zolightning.optim.sgd import ZOSGD
from zolightning.run_hparams import hold_lightning_hparams, log_run_hparams, optimizer_hparams, register_final_metrics
from zolightning.structures.base import PerturbationStructure
from zolightning.step_logging import StepLogging
from zolightning.training_step import evaluation_mode, extract_loss, zo_training_step
from zolightning.trainer_checks import (
    check_optimizer_for_zo,
    check_trainer_for_zo,
    optimizer_step_watched,
    step_schedulers,
)

# Lightning advises manual-optimization users to snapshot weights before `optimizer.step()` for ModelCheckpoint; a ZO
# step has no such moment to save (the step restores its perturbations itself), so the advice does not apply.
_NOT_FOR_ZO = "Using ModelCheckpoint with manual optimization and every_n_train_steps"
# Lightning's own use of a torch API that torch deprecated (`isinstance(treespec, LeafSpec)`, a FutureWarning printed
# on every fit): nothing in the user's code can act on it. Filtered for the fit only, like the advice above.
_LIGHTNING_PYTREE = r".*isinstance\(treespec, LeafSpec\)"


class ZOLightningModule(StepLogging, LightningModule):
    """Base class for zeroth-order training with the Lightning Trainer.

    Args:
        zo: the ZO step's settings (:class:`~zolightning.ZOConfig`, a mapping of its fields, or ``None``).
        *args, **kwargs: passed to ``LightningModule``.

    Attributes:
        zo_config: the resolved :class:`ZOConfig`: the engine's own (frozen; ``as_zo`` makes a new one).
        zo_engine: the :class:`~zolightning.engine.StepEngine` that measures each step (structures install on it).
        zo_update: the update that applies each measurement (the ZO optimizer itself, or
            :class:`~zolightning.optim.GradientUpdate` around a ``torch.optim`` one), from ``on_fit_start``.
        zo_replay: the recorded numbers of the coming step when it replays a logged run (set before each batch by
            :class:`~zolightning.callbacks.TrajectoryReplay`), else ``None``.

    The optimizer: ``configure_optimizers`` may return a ZO optimizer (``zolightning.optim``) or any ``torch.optim``
    optimizer (the estimate ``g·z`` is then written into ``.grad`` before it steps, with ε from ``zo.eps``). A class
    in the hierarchy that defines ``configure_optimizers`` always wins; only where none does, the default is
    :class:`~zolightning.optim.ZOSGD` with ``zo.lr`` / ``zo.eps`` / ``zo.weight_decay``.

    Hooks: Lightning's ``on_before_optimizer_step`` runs once per update, after the step's evaluations and before the
    update, with θ restored (and, with a ``torch.optim`` optimizer, the estimate in ``.grad``). Values logged with
    ``self.log`` inside ``training_step`` are averaged over the evaluations and logged once per step.
    """

    def __init__(self, zo: ZOConfig | Mapping[str, Any] | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_zo(ZOConfig.coerce(zo))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        step = cls.training_step
        if not getattr(step, "_zo_wrapped", False):
            cls.training_step = zo_training_step(step)  # type: ignore[method-assign]
        # `class MyZO(ZOLightningModule, MyModel)` puts our default before MyModel's own optimizer: the user's wins.
        if cls.configure_optimizers is ZOLightningModule.configure_optimizers:
            for base in cls.__mro__[cls.__mro__.index(ZOLightningModule) + 1 :]:
                if base is not LightningModule and "configure_optimizers" in vars(base):
                    cls.configure_optimizers = vars(base)["configure_optimizers"]  # type: ignore[method-assign]
                    break

    def _init_zo(self, config: ZOConfig) -> None:
        self.automatic_optimization = False
        self.zo_engine = StepEngine(config, module=self)
        self.zo_update: Update | None = None
        self.zo_replay: Recorded | None = None
        self._zo_defer = False
        self._zo_evaluating = False
        self._zo_log_buffer: list[tuple[str, Any, dict[str, Any]]] | None = None
        self._zo_checked = False
        self._zo_bound: object | None = None
        self._zo_default_optimizer: ZOSGD | None = None
        self._zo_micro_batches = 0
        self._zo_update_started = 0.0
        self._zo_update_samples = 0
        self._zo_quiet: ExitStack | None = None

    @property
    def zo_config(self) -> ZOConfig:
        """The ZO settings: the engine's config, the same object."""
        return self.zo_engine.config

    @property
    def zo_structure(self) -> PerturbationStructure:
        """The engine's perturbation structure (dense by default; structure callbacks install their rules on it)."""
        return self.zo_engine.structure

    @property
    def zo_last_estimates(self) -> list[DirectionalEstimate]:
        """Every direction's estimate of the latest update (every rank's under query parallelism)."""
        last = self.zo_engine.last
        return list(last.estimates) if last is not None else []

    @property
    def zo_last_estimate(self) -> DirectionalEstimate | None:
        return self.zo_last_estimates[0] if self.zo_last_estimates else None

    @property
    def zo_nonfinite_steps(self) -> int:
        return self.zo_engine.nonfinite.total

    # ----------------------------------------------------------------------------------------------- configuration

    @override
    def configure_optimizers(self) -> Any:
        """The default optimizer: :class:`ZOSGD` over the trainable parameters with ``zo.lr``, ``zo.eps`` and
        ``zo.weight_decay`` (MeZO's 1e-6, 1e-3 and 0 when unset)."""
        named = [(name, p) for name, p in self.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(
                f"{type(self).__name__} has no trainable parameters (requires_grad=True), so ZO training has nothing "
                "to perturb. Unfreeze what should be trained, e.g. `module.requires_grad_(True)`."
            )
        config = self.zo_config
        self._zo_default_optimizer = ZOSGD(
            named,
            lr=1e-6 if config.lr is None else config.lr,
            eps=1e-3 if config.eps is None else config.eps,
            weight_decay=config.weight_decay or 0.0,
        )
        return self._zo_default_optimizer

    def zo_optimizer(self) -> LightningOptimizer:
        """The single (wrapped) optimizer ZO training steps."""
        optimizers = LightningModule.optimizers(self)
        if isinstance(optimizers, list):
            if len(optimizers) != 1:
                raise ValueError(
                    f"ZO training steps exactly one optimizer; `configure_optimizers` returned {len(optimizers)}. "
                    "Put all parameters in one optimizer, with param groups for different settings."
                )
            optimizers = optimizers[0]
        return optimizers

    def _bind_engine(self, optimizer: torch.optim.Optimizer) -> None:
        """Attach ``optimizer``'s update to the engine (once per fit), after checking who owns which setting."""
        if self._zo_bound is optimizer:
            return
        config, engine = self.zo_config, self.zo_engine
        zo_optimizer = isinstance(optimizer, ZOOptimizer)
        check_optimizer_for_zo(self, config, optimizer, zo_optimizer, default=optimizer is self._zo_default_optimizer)
        if isinstance(optimizer, ZOOptimizer):
            optimizer.use_engine(engine)
            update: Update = optimizer
        else:
            update = GradientUpdate(optimizer, eps=1e-3 if config.eps is None else config.eps)
            engine.attach(update.target())
        engine.names = {id(p): name for name, p in self.named_parameters()}
        trainer = self.trainer
        total = trainer.max_steps
        if total is None or total < 0:
            total = int(trainer.estimated_stepping_batches) // config.accumulate_batches
        engine.total_steps = total
        self.zo_update = update
        # θ may stay displaced into the update's noise pass unless a hook reads it before the update: a ZO
        # optimizer's update follows those hooks; a torch optimizer's gradient write (which restores) precedes them.
        self._zo_defer = not zo_optimizer or not optimizer_step_watched(trainer, self)
        self._zo_bound = optimizer

    @override
    def on_fit_start(self) -> None:
        # Bind before Lightning restores the optimizer's state (it does so after this hook), so that the engine's
        # counters in that state land in this module's engine.
        optimizer = self.zo_optimizer().optimizer
        self._bind_engine(optimizer)
        # One hparams header with all the run used (its optimizer's own settings, not `zo:`'s defaults), written
        # before Lightning's, which it holds back. Logged, not saved: a checkpoint keeps the init arguments.
        log_run_hparams(self, optimizer_hparams(optimizer))

    @override
    def on_fit_end(self) -> None:
        register_final_metrics(self)  # after every callback's `on_fit_end`: the final metrics are logged by now

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["zo"] = self.zo_engine.state_dict()

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.zo_engine.load_state_dict(checkpoint.get("zo", {}))

    # ----------------------------------------------------------------------------------------------- the ZO step

    def zo_step(self, loss_fn: Callable[[], Any], batch: Any = None) -> Any:
        """Run one ZO step with ``loss_fn`` (the user's ``training_step`` bound to the batch) as the objective:
        ``zo_update.apply(zo_engine.measure(loss_fn))``, the update going through Lightning's wrapped optimizer.

        With ``zo.accumulate_batches`` = k, micro-batches 1 … k−1 are only measured; the k-th updates.

        Returns what Lightning expects from ``training_step``: the loss at θ, or the user's dict with ``"loss"``
        replaced by it.
        """
        if self.zo_config.gradient == "backprop":
            return self._backprop_step(loss_fn, batch)
        started = time.perf_counter()
        self._check_trainer()
        wrapped = self.zo_optimizer()
        optimizer = wrapped.optimizer
        self._bind_engine(optimizer)
        engine, trainer, update = self.zo_engine, self.trainer, self.zo_update
        assert update is not None
        last_output: list[Any] = [None]

        def evaluate() -> Tensor:
            self._zo_evaluating = True
            try:
                last_output[0] = loss_fn()
            finally:
                self._zo_evaluating = False
            return extract_loss(last_output[0])

        if self._zo_micro_batches == 0:
            self._zo_update_started, self._zo_update_samples = started, 0
        self._zo_update_samples += self._batch_size(batch) or 0
        # As Lightning's own accumulation does, the last batch of an epoch updates with a partial group.
        updates = self._zo_micro_batches + 1 >= self.zo_config.accumulate_batches or bool(trainer.is_last_batch)
        self._zo_log_buffer = []
        try:
            with evaluation_mode(self, self.zo_config.eval_mode):
                measurement = engine.measure(
                    evaluate, trainer.global_step, accumulate=not updates, recorded=self.zo_replay,
                    defer_restore=self._zo_defer,
                )
                if updates:
                    update.apply(measurement, stepper=wrapped)  # Lightning counts the step and runs its hooks
        finally:
            logged, self._zo_log_buffer = self._zo_log_buffer, None
        self._zo_micro_batches = 0 if updates else self._zo_micro_batches + 1
        if updates:
            step_schedulers(trainer, "step")
            self._log_step(measurement, optimizer)
        self._replay_logs(logged)
        output = last_output[0]
        return {**output, "loss": measurement.loss} if isinstance(output, Mapping) else measurement.loss

    def zo_objective(self, batch: Any, batch_idx: int = 0) -> Callable[[], Tensor]:
        """The step's objective on ``batch``, for measurements outside the step (diagnostics, the lr/ε finder): the
        user's ``training_step`` in the step's eval mode, returning the loss; values it logs are dropped."""

        def evaluate() -> Tensor:
            buffer, self._zo_log_buffer = self._zo_log_buffer, []
            self._zo_evaluating = True
            try:
                with evaluation_mode(self, self.zo_config.eval_mode):
                    return extract_loss(self.training_step(batch, batch_idx))
            finally:
                self._zo_evaluating = False
                self._zo_log_buffer = buffer

        return evaluate

    def _backprop_step(self, loss_fn: Callable[[], Any], batch: Any) -> Any:
        """The first-order baseline (``zo.gradient: backprop``): backward through ``loss_fn``, then the optimizer
        steps every ``zo.accumulate_batches`` micro-batches (and at the end of an epoch)."""
        self._check_trainer()
        wrapped = self.zo_optimizer()
        trainer = self.trainer
        accumulate = self.zo_config.accumulate_batches
        with evaluation_mode(self, self.zo_config.eval_mode):
            output = loss_fn()
            loss = extract_loss(output)
            self.manual_backward(loss / accumulate)
        self._zo_micro_batches += 1
        if self._zo_micro_batches >= accumulate or bool(trainer.is_last_batch):
            wrapped.step()
            wrapped.zero_grad(set_to_none=True)
            self._zo_micro_batches = 0
            step_schedulers(trainer, "step")
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=self._batch_size(batch))
        return output

    @override
    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        if self._zo_evaluating:
            raise RuntimeError(REENTRANT_STEP)
        super().manual_backward(loss, *args, **kwargs)

    @override
    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        if self._zo_evaluating:
            raise RuntimeError(REENTRANT_STEP)
        return super().optimizers(use_pl_optimizer)

    @override
    def on_train_epoch_end(self) -> None:
        step_schedulers(self.trainer, "epoch")

    # ----------------------------------------------------------------------------------------------- checks

    @override
    def setup(self, stage: str) -> None:
        # The ZO settings are part of the run's hyperparameters (logged and checkpointed).
        self.hparams["zo"] = asdict(self.zo_config)
        hold_lightning_hparams(self, stage)
        if stage == "fit":
            self._check_trainer()

    @override
    def teardown(self, stage: str) -> None:
        if self._zo_quiet is not None:
            self._zo_quiet.close()
            self._zo_quiet = None
        self._zo_checked = False

    def _check_trainer(self) -> None:
        """Strategy, placement and precision checks, run at ``setup`` and again before the first step (in case a
        subclass overrides ``setup`` without calling ``super().setup``)."""
        if self._zo_checked:
            return
        self._zo_checked = True
        check_trainer_for_zo(self.trainer, self)
        self._zo_quiet = ExitStack()
        self._zo_quiet.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message=_NOT_FOR_ZO)
        warnings.filterwarnings("ignore", message=_LIGHTNING_PYTREE)
