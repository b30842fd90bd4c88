"""``DevSelection``: MeZO's model selection. Evaluate on the dev split every N steps, keep the best weights, and
report the test score of that checkpoint at the end, in one line.

The module is evaluated through :class:`~zolightning.callbacks.HeldOutEvaluation`'s protocol (``predict_labels``),
so any classifier that implements it works. Scores (fractions): accuracy, macro-F1 and balanced accuracy, by
torchmetrics' functional API (:meth:`HeldOutEvaluation.scores`).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from zolightning.callbacks.held_out_evaluation import HeldOutEvaluation
from zolightning.callbacks.result_line import not_scored, print_result
from zolightning.functional.checks import check_choice, check_int_at_least
from zolightning.run_results import record_result

__all__ = ["DevSelection"]

Score = Literal["accuracy", "macro_f1", "balanced_accuracy"]


class DevSelection(Callback):
    """Choose the checkpoint on dev, report it on test (Malladi et al. 2023's protocol).

    Args:
        every_n_steps: evaluate on the validation split every this many optimizer steps (default 100), and after the
            last step. With no training step at all (``max_steps: 0``, a zero-shot run) the initial model is the only
            candidate. A fit that starts training but is stopped before its first step (a callback set
            ``trainer.should_stop``, as ``ZOLearningRateFinder(stop_after=True)`` does) selects nothing and scores no
            split: one line says so, and :attr:`result` stays ``None``.
        monitor: the dev score that chooses: ``accuracy`` (default), ``macro_f1`` or ``balanced_accuracy``. Ties keep
            the earlier checkpoint.
        restore_best: leave the best weights in the module at the end (default ``True``); otherwise the final ones.
        verbose: print each dev evaluation and the final line (default ``True``).

    What is kept: the trainable parameters (``requires_grad``) of the best evaluation, in a file in the run's log
    folder (``best_trainable.pt``; a temporary folder when the run has no logger), so that memory stays what
    training needs.

    Logged: ``dev/<score>`` at every evaluation; at the end ``test/<score>`` of the chosen weights, ``selected_step``
    and ``hp_metric`` (the selected test accuracy). :attr:`result` holds the final figures, which are also recorded
    with :func:`~zolightning.run_results.record_result` (source ``dev_selection``), with the training wall time and
    the number of training forward passes that ran (calls of the module's ``forward`` during training batches, for
    any estimator or backprop; evaluations are not counted).
    """

    def __init__(
        self, every_n_steps: int = 100, monitor: Score = "accuracy", restore_best: bool = True, verbose: bool = True
    ) -> None:
        check_int_at_least(every_n_steps, 1, "every_n_steps")
        check_choice(monitor, Score, "monitor")
        self.every_n_steps = every_n_steps
        self.monitor = monitor
        self.restore_best = bool(restore_best)
        self.verbose = bool(verbose)
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] | None = None
        self.result: dict[str, Any] | None = None
        self._best_file: Path | None = None
        self._forwards = 0
        self._counting = False
        self._hook: RemovableHandle | None = None
        self._train_seconds = 0.0
        self._train_started: float | None = None
        self._started_at: int | None = None  # global_step when this fit's training started

    # ------------------------------------------------------------------------------------------------------ hooks

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.history, self.best, self.result = [], None, None
        self._forwards, self._train_seconds, self._started_at = 0, 0.0, None
        folder = trainer.log_dir if trainer.loggers else None
        if folder is None or not trainer.is_global_zero:
            folder = tempfile.mkdtemp(prefix="zolightning-dev-selection-")
        self._best_file = Path(folder) / "best_trainable.pt"

        def count(*_: Any) -> None:
            if self._counting:
                self._forwards += 1

        self._hook = pl_module.register_forward_pre_hook(count)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._train_started = time.perf_counter()
        self._started_at = trainer.global_step

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._counting = True

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._counting = False
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and not self._evaluated_at(step):
            self._pause_clock()
            self._evaluate_dev(trainer, pl_module)
            self._train_started = time.perf_counter()

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._pause_clock()

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
        # Training started and stopped at once (a zero-shot run never starts it): no candidate was ever trained.
        if self._started_at is not None and trainer.global_step == self._started_at:
            if self.verbose:
                print_result(trainer, f"Selected on dev: nothing; {not_scored()}.")
            return
        if not self._evaluated_at(trainer.global_step):
            self._evaluate_dev(trainer, pl_module)
        assert self.best is not None
        if self.restore_best and self.best["step"] != trainer.global_step:
            self._load_best(pl_module)
        test = self._scores(trainer, pl_module, "test")
        self.result = {
            "selected_step": int(self.best["step"]),
            "steps": trainer.global_step,
            **{f"dev_{name}": self.best[name] for name in ("accuracy", "macro_f1", "balanced_accuracy")},
            **{f"test_{name}": value for name, value in test.items()},
            "train_forwards": self._forwards,
            "train_seconds": round(self._train_seconds, 2),
            "dev_evaluations": len(self.history),
            "dev_curve": [[int(entry["step"]), entry[self.monitor]] for entry in self.history],
            "dev_timeline": [
                [int(entry["step"]), round(entry.get("train_seconds", math.nan), 2),
                 int(entry.get("train_forwards", -1)), entry[self.monitor]]
                for entry in self.history
            ],
        }
        metrics = {f"test/{name}": value for name, value in test.items()}
        metrics.update({"selected_step": float(self.best["step"]), "hp_metric": test["accuracy"]})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        record_result(trainer, "dev_selection", self.result)
        if self.verbose:
            print_result(trainer, self.summary())

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._counting = False
        if self._hook is not None:
            self._hook.remove()

    # ------------------------------------------------------------------------------------------------- the work

    def summary(self) -> str:
        """``"Selected on dev: step 400 of 1000 (dev accuracy 71.20%) -> test accuracy 69.80%, macro-F1 69.51%,
        balanced accuracy 69.80%"``."""
        assert self.result is not None
        r = self.result
        return (
            f"Selected on dev: step {r['selected_step']} of {r['steps']} (dev {self.monitor.replace('_', ' ')} "
            f"{100 * r['dev_' + self.monitor]:.2f}%, {r['dev_evaluations']} evaluations) -> test accuracy "
            f"{100 * r['test_accuracy']:.2f}%, macro-F1 {100 * r['test_macro_f1']:.2f}%, balanced accuracy "
            f"{100 * r['test_balanced_accuracy']:.2f}%"
        )

    def _pause_clock(self) -> None:
        if self._train_started is not None:
            self._train_seconds += time.perf_counter() - self._train_started
            self._train_started = None

    def _evaluated_at(self, step: int) -> bool:
        return bool(self.history) and self.history[-1]["step"] == step

    def _scores(self, trainer: Trainer, pl_module: LightningModule, split: Literal["val", "test"]) -> dict[str, float]:
        evaluator = HeldOutEvaluation(split=split, prefix=split, verbose=False)
        evaluator.evaluate(trainer, pl_module)
        return evaluator.scores()

    def _evaluate_dev(self, trainer: Trainer, pl_module: LightningModule) -> None:
        scores = self._scores(trainer, pl_module, "val")
        # The clock and the forward count as of this evaluation: time to accuracy is read off these.
        entry = {"step": float(trainer.global_step), "train_seconds": self._train_seconds,
                 "train_forwards": float(self._forwards), **scores}
        self.history.append(entry)
        for logger in trainer.loggers:
            logger.log_metrics({f"dev/{name}": value for name, value in scores.items()}, step=trainer.global_step)
        improved = self.best is None or scores[self.monitor] > self.best[self.monitor] or math.isnan(
            self.best[self.monitor]
        )
        if improved:
            self.best = entry
            self._save_best(pl_module)
        if self.verbose:
            mark = " (best)" if improved else ""
            score = f"{self.monitor} {100 * scores[self.monitor]:.2f}%"
            print_result(trainer, f"dev @ step {trainer.global_step}: {score}{mark}")

    def _save_best(self, pl_module: LightningModule) -> None:
        assert self._best_file is not None
        # `.cpu()` copies only what lives elsewhere: a CPU model is saved from its own storage, with no second copy in RAM.
        state = {name: p.detach().cpu() for name, p in pl_module.named_parameters() if p.requires_grad}
        self._best_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, self._best_file)

    @torch.no_grad()
    def _load_best(self, pl_module: LightningModule) -> None:
        assert self._best_file is not None
        state = torch.load(self._best_file, weights_only=True)
        parameters = dict(pl_module.named_parameters())
        for name, value in state.items():
            parameters[name].copy_(value.to(parameters[name].device))
