"""``ZOLearningRateFinder``: propose (and optionally apply) a ZO learning rate and ε before the first step."""

from __future__ import annotations

import math
from itertools import islice
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from zolightning.diagnostics.finder import FinderResult, find_lr_and_eps, sgd_lr_factor
from zolightning.diagnostics.lr_confirmation import Confirmation, confirm_lr
from zolightning.engine.collectives import averaged_over_ranks
from zolightning.functional.checks import check_int_at_least
from zolightning.module import ZOLightningModule
from zolightning.trainer_checks import FSDP2_STRATEGY, check_zo_callback, sharded_strategy_name

__all__ = ["ZOLearningRateFinder"]


def _check_range(value: tuple[float, float] | None, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    low, high = (float(v) for v in value)
    if not 0 < low < high:
        raise ValueError(f"`{name}` must be (low, high) with 0 < low < high, got {value!r}.")
    return low, high


class ZOLearningRateFinder(Callback):
    """Lightning's ``LearningRateFinder`` for ZO: before the first step, run the range tests of
    :func:`~zolightning.diagnostics.finder.find_lr_and_eps` on the first 2·``trials`` training batches (estimates on
    half of them, each step judged on another), print what
    they measured and why, and with ``apply=True`` set the optimizer's lr and ε to the proposal (every group scaled
    by the same factor, LR schedulers' base rates too).

    The weights are bitwise unchanged by the search. Under DDP rank 0 searches and every rank applies its proposal.
    Under FSDP2 (``ModelParallelStrategy``) the forwards are collective, so every rank searches, each on its own
    batches, with every loss averaged over ranks: the search of the global batches, identical on every rank.

    Args:
        trials: batches (and directions) averaged (default 4).
        lr_range: learning rates tried (default 1e-8 … 1).
        eps_range: ε tried (default 1e-5 … 1e-1); ``None`` keeps ε (for fp32 full fine-tuning ε barely matters).
        apply: set the proposal on the optimizer (default ``False``: only report).
        stop_after: end the fit after the search, for a run that only asks for the proposal (default ``False``).
        confirm_steps: with ``apply``, train this many real steps at the lr to apply (on the first ``trials``
            batches, judged on the next ``trials``) before applying it, halving it up to 4 times until the held-out
            loss falls; nothing is applied if it never does (default 50; 0 applies it unchecked).
        margin: with ``apply``, the share of the one-step proposal that is applied (default 0.25). One step from
            the initial weights tolerates more than a run: on an MLP the proposal passed 100 real steps and diverged
            after 700, half of it trained stably for 1000; on SmolLM2-135M full MeZO the proposal diverged within
            40 steps and a quarter of it is the recipe's lr (``benchmarks/finder_outside_models.py``, README).
            Weights, optimizer and engine state are put back afterwards
            (:func:`~zolightning.diagnostics.lr_confirmation.confirm_lr`).

    The proposal is ZO-SGD's lr. It is applied to ``ZOSGD``, ``ZOSGDCons`` and a plain ``torch.optim.SGD`` fed by ZO,
    times ``margin`` and 1 − momentum, once real steps confirm it; for any other optimizer (sign, Adam, HiZOO) only ε is applied, and the reason is printed.

    Attributes:
        result: the :class:`~zolightning.diagnostics.finder.FinderResult` (on rank 0; on every rank under FSDP2).
        confirmation: the real steps' :class:`~zolightning.diagnostics.lr_confirmation.Confirmation` (with ``apply``).
    """

    def __init__(
        self,
        trials: int = 4,
        lr_range: tuple[float, float] = (1e-8, 1.0),
        eps_range: tuple[float, float] | None = (1e-5, 1e-1),
        apply: bool = False,
        stop_after: bool = False,
        confirm_steps: int = 50,
        margin: float = 0.25,
    ) -> None:
        check_int_at_least(trials, 1, "trials")
        check_int_at_least(confirm_steps, 0, "confirm_steps")
        self.confirm_steps = confirm_steps
        if not 0 < margin <= 1:
            raise ValueError(f"`margin` must be in (0, 1], got {margin}: the share of the proposal that is applied.")
        self.margin = float(margin)
        self.confirmation: Confirmation | None = None
        self.trials = trials
        self.lr_range = _check_range(lr_range, "lr_range")
        self.eps_range = _check_range(eps_range, "eps_range")
        self.apply = bool(apply)
        self.stop_after = bool(stop_after)
        self.result: FinderResult | None = None
        self._restored: dict[str, Any] | None = None
        self._every_rank = False

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_zo_callback(
            "ZOLearningRateFinder", "proposes ZO learning rates", trainer, pl_module,
            " Use Lightning's `Tuner.lr_find` for that.", allow_fsdp2=True,
        )
        self._every_rank = sharded_strategy_name(trainer.strategy) == FSDP2_STRATEGY

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, ZOLightningModule)
        if self._restored is not None:
            # A resumed run: the optimizer's restored state already holds what the first search applied.
            return
        batches = [
            trainer.strategy.batch_to_device(batch) for batch in islice(iter(trainer.train_dataloader), 2 * self.trials)
        ]
        if not batches:
            raise ValueError("ZOLearningRateFinder needs at least one training batch.")
        objective_for = lambda t: pl_module.zo_objective(batches[t % len(batches)], t)  # noqa: E731
        proposal: tuple[float | None, float | None] = (None, None)
        if trainer.is_global_zero or self._every_rank:
            # Sharded weights: every rank searches in lock-step on the losses of the global batches.
            search_objective = (lambda t: averaged_over_ranks(objective_for(t))) if self._every_rank else objective_for
            self.result = find_lr_and_eps(
                pl_module.zo_engine, search_objective, trials=self.trials, lr_range=self.lr_range or (1e-8, 1.0),
                eps_range=self.eps_range,
            )
            if self._every_rank:  # the curve fit (LAPACK) can differ in its last bits between processes
                self.result = trainer.strategy.broadcast(self.result, src=0)
            rank_zero_info("ZO learning-rate finder:\n" + self.result.explanation)
            proposal = (self.result.lr, self.result.eps)
        lr, eps = trainer.strategy.broadcast(proposal, src=0)
        if self.apply:
            lr = self._lr_to_apply(trainer, pl_module, lr, eps, objective_for)
            self._apply(trainer, pl_module, lr, eps)
        if self.stop_after:
            trainer.should_stop = True

    def _lr_to_apply(
        self, trainer: pl.Trainer, pl_module: ZOLightningModule, lr: float | None, eps: float | None,
        objective_for: Any,
    ) -> float | None:
        """The proposal on the optimizer's own scale, confirmed by real steps; ``None`` (with the reason printed)
        when it cannot be applied safely."""
        if lr is None or not math.isfinite(lr):
            return None
        optimizer = pl_module.zo_optimizer().optimizer
        factor = sgd_lr_factor(optimizer)
        if factor is None:
            name = type(optimizer).__name__
            rank_zero_info(
                f"ZO learning-rate finder: lr not applied. {name} does not take ZO-SGD's step (it normalises or "
                "preconditions the estimate), so the proposal is not its lr; keep your own, or use "
                "`zolightning.optim.ZOSGD` to apply the finder's. Only eps was applied."
            )
            return None
        lr *= factor * self.margin
        if self.confirm_steps == 0:
            return lr
        if eps is not None:  # the steps must be taken with the eps the fit will use
            self._apply(trainer, pl_module, None, eps)
        assert pl_module.zo_update is not None
        confirmation = confirm_lr(
            pl_module.zo_engine, pl_module.zo_update, objective_for, lr, train=range(self.trials),
            judge=range(self.trials, 2 * self.trials), steps=self.confirm_steps,
            agree=lambda ok: bool(trainer.strategy.broadcast(ok, src=0)),
        )
        self.confirmation = confirmation
        if confirmation.lr is None:
            rank_zero_info(
                f"ZO learning-rate finder: lr not applied. {self.confirm_steps} real steps raised the held-out loss "
                f"at every lr tried ({confirmation.summary()}); keep your own lr, or give more `trials`."
            )
            return None
        backed = "" if confirmation.lr == lr else f", backed off from {lr:.2e}"
        rank_zero_info(
            f"ZO learning-rate finder: applied lr = {confirmation.lr:.2e}{backed} after {self.confirm_steps} real steps "
            f"lowered the held-out loss ({confirmation.summary()})."
        )
        return confirmation.lr

    @staticmethod
    def _apply(trainer: pl.Trainer, pl_module: ZOLightningModule, lr: float | None, eps: float | None) -> None:
        target = pl_module.zo_engine.target
        assert target is not None
        groups = target.optimizer.param_groups
        if lr is not None and math.isfinite(lr):
            factor = lr / float(groups[0]["lr"]) if groups[0]["lr"] else 0.0
            for group in groups:
                group["lr"] = lr if not factor else group["lr"] * factor
                if "initial_lr" in group:
                    group["initial_lr"] = group["initial_lr"] * factor if factor else lr
            for config in trainer.lr_scheduler_configs:
                if factor and hasattr(config.scheduler, "base_lrs"):
                    config.scheduler.base_lrs = [base * factor for base in config.scheduler.base_lrs]
        if eps is not None:  # ε lives in the groups (an ε schedule takes the new value as its base)
            factor = eps / float(groups[0][target.eps_key])
            for group in groups:
                group[target.eps_key] = eps if group is groups[0] else group[target.eps_key] * factor

    @override
    def state_dict(self) -> dict[str, Any]:
        if self.result is None:
            return {}
        return {"lr": self.result.lr, "eps": self.result.eps}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict) if state_dict else None
