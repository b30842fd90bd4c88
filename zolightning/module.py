"""``ZOLightningModule``: a LightningModule whose training step is a seeded two-point zeroth-order step.

A subclass writes ``training_step`` exactly as for backprop, returning the loss (a scalar tensor, or a dict with
``"loss"``). The class wraps that method: when Lightning calls it, the module draws the step seed, and the optimizer
evaluates the original ``training_step`` at θ + εz and θ − εz (no_grad, eval mode by default), restores θ and updates
along z. Validation and test steps are untouched. The step goes through Lightning's wrapped optimizer, so
``global_step``, ``max_steps``, checkpointing and LR schedulers behave as with backprop.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities.data import extract_batch_size
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.types import LRSchedulerConfig
from torch import Tensor
from typing_extensions import override

from zolightning.config import ZOConfig
from zolightning.functional.eps_schedule import eps_factor
from zolightning.functional.estimators import (
    Reduce,
    RestoreMode,
    TwoPointEstimate,
    accumulate_gradient_,
    average_estimates,
    two_point_estimate,
)
from zolightning.functional.forward_gradient import forward_gradient_estimate as _forward_gradient
from zolightning.functional.noise import step_seed
from zolightning.functional.perturbation import PerturbationPlan
from zolightning.functional.structure import PerturbationStructure, dense_structure
from zolightning.optim.optimizer import EstimateFn, Gather, ZOOptimizer, trainable_tensors
from zolightning.optim.sgd import ZOSGD


# Strategies that shard parameters (FSDP, model parallel) or keep fp32 masters that overwrite in-place edits (DeepSpeed).
SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


def extract_loss(output: Any) -> Tensor:
    """The loss from a ``training_step`` output: a scalar tensor, a number, or a mapping with ``"loss"``."""
    if isinstance(output, Mapping):
        if "loss" not in output:
            raise ValueError(f"`training_step` returned a dict without 'loss' (keys: {sorted(output)}).")
        output = output["loss"]
    if isinstance(output, (int, float)):
        return torch.tensor(float(output))
    if not isinstance(output, Tensor):
        raise TypeError(
            "For ZO training, `training_step` must return the loss: a scalar tensor or a dict with 'loss'; "
            f"got {type(output).__name__}."
        )
    return output


@dataclass(frozen=True)
class ZOStepOptions:
    """What one ZO step estimates with: its directions' seeds, the plan, and the estimator's options."""

    seeds: list[int]
    plan: PerturbationPlan
    reduce: Reduce | None
    restore: RestoreMode
    one_sided: bool
    clip: float | None
    estimate_fn: EstimateFn | None
    gather: Gather | None

    def estimates(self, evaluate: Callable[[], Tensor]) -> list[TwoPointEstimate]:
        """The step's estimates on the current batch, θ restored (the plain-optimizer path)."""
        if self.estimate_fn is not None:
            return [self.estimate_fn(self.plan, seed) for seed in self.seeds]
        return [
            two_point_estimate(evaluate, self.plan, seed, one_sided=self.one_sided, restore=self.restore, reduce=self.reduce)
            for seed in self.seeds
        ]


class _ObjectiveModule(torch.nn.Module):
    """Holds the LightningModule as its child ``owner`` so that ``torch.func.functional_call`` can swap the owner's
    parameters while ``forward`` runs the user's ``training_step`` (for the forward-gradient estimator)."""

    def __init__(self, owner: torch.nn.Module, evaluate: Callable[[], Tensor]) -> None:
        super().__init__()
        self.owner = owner
        self._evaluate = evaluate

    def forward(self) -> Tensor:
        return self._evaluate()


def _zo_training_step(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a user's ``training_step`` so that a call from Lightning runs a whole ZO step around it."""

    @functools.wraps(original)
    def training_step(self: ZOLightningModule, *args: Any, **kwargs: Any) -> Any:
        # Inside the step's own evaluations, or called by hand outside a fit loop, it is the plain objective.
        if self._zo_evaluating or self._trainer is None or not self._trainer.training:
            return original(self, *args, **kwargs)
        batch = args[0] if args else kwargs.get("batch")
        return self.zo_step(functools.partial(original, self, *args, **kwargs), batch)

    training_step._zo_wrapped = True  # type: ignore[attr-defined]
    return training_step


def sharded_strategy_name(strategy: object) -> str | None:
    """The name in ``SHARDED_STRATEGIES`` of ``strategy``'s class or of a class it derives from (a subclass of
    ``FSDPStrategy`` shards as ``FSDPStrategy`` does), else ``None``."""
    for cls in type(strategy).__mro__:
        if cls.__name__ in SHARDED_STRATEGIES:
            return cls.__name__
    return None


class ZOLightningModule(LightningModule):
    """Base class for zeroth-order training with the Lightning Trainer.

    Args:
        zo: the ZO step's settings (:class:`~zolightning.ZOConfig`, a mapping of its fields, or ``None``).
        *args, **kwargs: passed to ``LightningModule``.

    Attributes:
        zo_config: the resolved :class:`ZOConfig`.
        zo_structure: the perturbation structure (dense by default; the structure callbacks replace it).
        zo_last_estimate: the first :class:`~zolightning.functional.TwoPointEstimate` of the latest step.
        zo_last_estimates: all of the latest step's estimates (q directions; every rank's under query parallelism).

    The optimizer: ``configure_optimizers`` may return a ZO optimizer (``zolightning.optim``; the default is
    :class:`~zolightning.optim.ZOSGD` with ``zo.lr``/``zo.eps``/``zo.weight_decay``) or any ``torch.optim``
    optimizer. With the latter, the estimate ``g·z`` is written into ``.grad`` of the perturbed tensors before it
    steps, which costs one gradient-sized buffer (freed after the step) plus that optimizer's own state.

    Hooks: with a ZO optimizer, Lightning's ``on_before_optimizer_step`` runs after each of the two evaluations,
    as it does for any optimizer that re-evaluates its closure (``LBFGS``). Values logged with ``self.log`` inside
    ``training_step`` are averaged over the two evaluations and logged once per step.
    """

    def __init__(self, zo: ZOConfig | Mapping[str, Any] | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_zo(ZOConfig.coerce(zo))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        step = cls.training_step
        if not getattr(step, "_zo_wrapped", False):
            cls.training_step = _zo_training_step(step)  # type: ignore[method-assign]

    def _init_zo(self, config: ZOConfig) -> None:
        self.zo_config = config
        self.automatic_optimization = False
        self.zo_structure: PerturbationStructure = dense_structure(config.distribution)
        self.zo_last_estimate: TwoPointEstimate | None = None
        self.zo_last_estimates: list[TwoPointEstimate] = []
        self.zo_nonfinite_steps = 0
        self._zo_nonfinite_streak = 0
        self._zo_evaluating = False
        self._zo_log_buffer: list[tuple[str, Any, dict[str, Any]]] | None = None
        self._zo_names: dict[int, str] = {}
        self._zo_checked = False
        self._zo_accumulated: list[list[TwoPointEstimate]] = []
        self._zo_update_started = 0.0
        self._zo_update_samples = 0
        self._zo_lr_scale_cache: dict[str, float] = {}

    # ----------------------------------------------------------------------------------------------- configuration

    @override
    def configure_optimizers(self) -> Any:
        """The default optimizer: :class:`ZOSGD` over the trainable parameters with ``zo.lr``, ``zo.eps``."""
        named = [(name, p) for name, p in self.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(self._no_trainable_message())
        config = self.zo_config
        return ZOSGD(named, lr=config.lr, eps=config.eps, weight_decay=config.weight_decay, seed=config.seed)

    def _no_trainable_message(self) -> str:
        return (
            f"{type(self).__name__} has no trainable parameters (requires_grad=True), so ZO training has nothing to "
            "perturb. Unfreeze what should be trained, e.g. `module.requires_grad_(True)` or the head's parameters."
        )

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["zo"] = {"nonfinite_steps": self.zo_nonfinite_steps, "nonfinite_streak": self._zo_nonfinite_streak}

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("zo", {})
        self.zo_nonfinite_steps = int(state.get("nonfinite_steps", 0))
        self._zo_nonfinite_streak = int(state.get("nonfinite_streak", 0))

    # ----------------------------------------------------------------------------------------------- the ZO step

    def zo_optimizer(self) -> LightningOptimizer:
        """The single (wrapped) optimizer ZO training steps."""
        optimizers = self.optimizers()
        if isinstance(optimizers, list):
            if len(optimizers) != 1:
                raise ValueError(
                    f"ZO training steps exactly one optimizer; `configure_optimizers` returned {len(optimizers)}. "
                    "Put all parameters in one optimizer, with param groups for different settings."
                )
            optimizers = optimizers[0]
        return optimizers

    def zo_plan(self, optimizer: torch.optim.Optimizer, step: int) -> PerturbationPlan:
        """The step's plan: the optimizer's trainable tensors, named as in this module, through ``zo_structure``,
        with ε following ``zo.eps_schedule``."""
        names = self._parameter_names(optimizer)
        factor = self._eps_factor(step)
        if isinstance(optimizer, ZOOptimizer):
            eps = None
            for group in optimizer.param_groups:
                # As torch's LR schedulers keep ``initial_lr``, the group keeps its initial ε (and checkpoints it).
                group["eps"] = group.setdefault("initial_eps", group["eps"]) * factor
        else:
            eps = self.zo_config.eps * factor
        tensors = trainable_tensors(optimizer.param_groups, names, eps)
        if not tensors:
            raise ValueError(self._no_trainable_message())
        plan = self.zo_structure.plan(tensors, step)
        if self.zo_config.lr_scales:
            plan = [replace(entry, lr_scale=entry.lr_scale * self._lr_scale(entry.name)) for entry in plan]
        return plan

    def _lr_scale(self, name: str) -> float:
        """``zo.lr_scales``' multiplier for the parameter ``name`` (the first matching regex; 1 if none)."""
        scales = self._zo_lr_scale_cache
        if name not in scales:
            matches = (scale for pattern, scale in self.zo_config.lr_scales.items() if re.search(pattern, name))
            scales[name] = float(next(matches, 1.0))
        return scales[name]

    def _eps_factor(self, step: int) -> float:
        config = self.zo_config
        if config.eps_schedule == "constant":
            return 1.0
        trainer = self.trainer
        total = trainer.max_steps
        if total is None or total < 0:
            total = int(trainer.estimated_stepping_batches) // config.accumulate_batches
        return eps_factor(config.eps_schedule, step, total, config.eps_final_ratio)

    def _parameter_names(self, optimizer: torch.optim.Optimizer) -> dict[int, str]:
        ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not ids <= self._zo_names.keys():
            self._zo_names = {id(p): name for name, p in self.named_parameters()}
        return self._zo_names

    def zo_step(self, loss_fn: Callable[[], Any], batch: Any = None) -> Any:
        """Run one ZO step with ``loss_fn`` (the user's ``training_step`` bound to the batch) as the objective.

        With ``zo.accumulate_batches`` = k, micro-batches 1 … k−1 are only estimated; the k-th updates.

        Returns what Lightning expects from ``training_step``: the loss at θ (L0, or the mean of L+ and L−), or the
        user's dict with ``"loss"`` replaced by it.
        """
        started = time.perf_counter()
        self._check_trainer()
        wrapped = self.zo_optimizer()
        optimizer = wrapped.optimizer
        config = self.zo_config
        trainer = self.trainer
        step = trainer.global_step
        parallel = config.query_parallel and trainer.world_size > 1
        # Direction j of the step has seed stream j; under query parallelism rank r owns directions r·q … r·q + q − 1,
        # so every rank can name every direction without communicating seeds.
        first = trainer.global_rank * config.num_directions if parallel else 0
        seeds = [step_seed(config.seed, step, first + k) for k in range(config.num_directions)]
        plan = self.zo_plan(optimizer, step)
        reduce = self._reduce_across_ranks if trainer.world_size > 1 and not parallel else None
        restore = self.zo_structure.restore or config.restore
        if parallel:
            # Ranks perturb along different directions, and +εz − 2εz + εz rounds differently for each: only an exact
            # restore keeps the replicas bitwise identical.
            restore = "snapshot"
        last_output: list[Any] = [None]

        def evaluate() -> Tensor:
            self._zo_evaluating = True
            try:
                last_output[0] = loss_fn()
            finally:
                self._zo_evaluating = False
            return extract_loss(last_output[0])

        options = ZOStepOptions(
            seeds=seeds, plan=plan, reduce=reduce, restore=restore, one_sided=config.estimator == "one-sided",
            clip=config.clip, estimate_fn=self._forward_gradient_fn(evaluate, reduce),
            gather=functools.partial(self._gather_across_ranks, step=step) if parallel else None,
        )
        if not self._zo_accumulated:
            self._zo_update_started, self._zo_update_samples = started, 0
        self._zo_update_samples += self._batch_size(batch) or 0
        self._zo_log_buffer = []
        # As Lightning's own accumulation does, the last batch of an epoch updates with a partial group.
        updates = len(self._zo_accumulated) + 1 >= config.accumulate_batches or bool(trainer.is_last_batch)
        try:
            with self._evaluation_mode():
                if not updates:
                    estimates = self._estimate_only(optimizer, evaluate, options)
                    self._zo_accumulated.append(estimates)
                else:
                    estimates = self._update(wrapped, evaluate, options)
        finally:
            logged, self._zo_log_buffer = self._zo_log_buffer, None
        loss = torch.stack([estimate.loss for estimate in estimates]).mean()
        if updates:
            self.zo_last_estimates = estimates
            self.zo_last_estimate = estimates[0]
            self._after_step(estimates, loss, plan, optimizer, self._zo_update_started, self._zo_update_samples)
        self._replay_logs(logged)
        output = last_output[0]
        if isinstance(output, Mapping):
            return {**output, "loss": loss}
        return loss

    def _estimate_only(
        self, optimizer: torch.optim.Optimizer, evaluate: Callable[[], Tensor], options: ZOStepOptions
    ) -> list[TwoPointEstimate]:
        """One micro-batch of an accumulated step: estimates along the step's directions, nothing updated."""
        if isinstance(optimizer, ZOOptimizer):
            return optimizer.estimate(
                evaluate, seed=options.seeds, plan=options.plan, reduce=options.reduce, restore=options.restore,
                one_sided=options.one_sided, estimate_fn=options.estimate_fn,
            )
        return options.estimates(evaluate)

    def _update(
        self, wrapped: LightningOptimizer, evaluate: Callable[[], Tensor], options: ZOStepOptions
    ) -> list[TwoPointEstimate]:
        """Estimate on this micro-batch, merge the accumulated micro-batches' estimates, and update."""
        optimizer = wrapped.optimizer
        accumulated, self._zo_accumulated = self._zo_accumulated, []
        if isinstance(optimizer, ZOOptimizer):
            wrapped.step(
                closure=evaluate, seed=options.seeds, plan=options.plan, reduce=options.reduce, restore=options.restore,
                gather=options.gather, one_sided=options.one_sided, clip=options.clip,
                estimate_fn=options.estimate_fn, accumulated=accumulated,
            )
            return optimizer.last_estimates
        return self._step_through_gradient(wrapped, evaluate, options, accumulated)

    def _step_through_gradient(
        self,
        wrapped: LightningOptimizer,
        evaluate: Callable[[], Tensor],
        options: ZOStepOptions,
        accumulated: Sequence[Sequence[TwoPointEstimate]],
    ) -> list[TwoPointEstimate]:
        """Plain ``torch.optim`` path: the closure estimates, writes ``g·z`` into ``.grad``, the optimizer steps."""
        result: list[TwoPointEstimate] = []

        def closure() -> Tensor:
            rounds = [*accumulated, options.estimates(evaluate)]
            estimates = [average_estimates([round_[k] for round_ in rounds]) for k in range(len(options.seeds))]
            if options.gather is not None:
                estimates = list(options.gather(estimates))
            result[:] = estimates
            if all(estimate.is_finite for estimate in estimates):
                for estimate in estimates:
                    accumulate_gradient_(options.plan, estimate, weight=1.0 / len(estimates), clip=options.clip)
            return torch.stack([estimate.loss for estimate in estimates]).mean()

        wrapped.zero_grad(set_to_none=True)
        try:
            wrapped.step(closure=closure)
        finally:
            wrapped.zero_grad(set_to_none=True)
        return result

    def _forward_gradient_fn(
        self, evaluate: Callable[[], Tensor], reduce: Callable[[Tensor], Tensor] | None
    ) -> EstimateFn | None:
        """With ``zo.estimator="forward-gradient"``, the estimate function: ``training_step``'s loss as a function of
        the plan's tensors (``torch.func.functional_call``) differentiated by ``torch.func.jvp``."""
        if self.zo_config.estimator != "forward-gradient":
            return None
        holder = _ObjectiveModule(self, evaluate)

        def objective(params: Mapping[str, Tensor]) -> Tensor:
            named = {f"owner.{name}": value for name, value in params.items()}
            return torch.func.functional_call(holder, named, (), strict=False)

        return functools.partial(_forward_gradient, objective, reduce=reduce)

    def _gather_across_ranks(self, local: Sequence[TwoPointEstimate], step: int) -> list[TwoPointEstimate]:
        """Query parallelism: every rank's losses per direction, as estimates in rank-major order. Only the losses
        travel (4 numbers × q per rank); each rank re-derives the seeds."""
        values = torch.stack([estimate.values() for estimate in local]).to(self.device)
        gathered = self.trainer.strategy.all_gather(values).detach().float().cpu()  # (world, q, 4)
        config, rank, q = self.zo_config, self.trainer.global_rank, len(local)
        kind, center = local[0].kind, local[0].loss_center is not None
        estimates = []
        for r in range(gathered.shape[0]):
            for k in range(q):
                estimate = TwoPointEstimate.from_values(gathered[r, k], step_seed(config.seed, step, r * q + k), kind, center)
                if r == rank:
                    estimate = replace(estimate, forward_seconds=local[k].forward_seconds, total_seconds=local[k].total_seconds)
                estimates.append(estimate)
        return estimates

    def _reduce_across_ranks(self, losses: Tensor) -> Tensor:
        """The mean of the losses over ranks: the step's only communication (a few floats)."""
        losses = losses.detach().to(self.device, torch.float32)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # One all-reduce; Lightning's `strategy.reduce` would add a barrier, a second round trip every step.
            torch.distributed.all_reduce(losses)
            return losses.div_(torch.distributed.get_world_size()).cpu()
        return self.trainer.strategy.reduce(losses, reduce_op="mean").detach().cpu()

    @contextmanager
    def _evaluation_mode(self) -> Iterator[None]:
        """Eval mode for the step when ``zo.eval_mode``; every submodule's own flag is restored afterwards."""
        if not self.zo_config.eval_mode:
            yield
            return
        flags = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            yield
        finally:
            for module, training in flags:
                module.training = training

    # ----------------------------------------------------------------------------------------------- after the step

    def _after_step(
        self,
        estimates: Sequence[TwoPointEstimate],
        loss: Tensor,
        plan: PerturbationPlan,
        optimizer: torch.optim.Optimizer,
        started: float,
        samples: int | None,
    ) -> None:
        if all(e.is_finite for e in estimates):
            self._zo_nonfinite_streak = 0
        else:
            self.zo_nonfinite_steps += 1
            self._zo_nonfinite_streak += 1
            if self._zo_nonfinite_streak >= self.zo_config.max_nonfinite:
                losses = [float(v) for v in estimates[0].values()[:3]]
                raise FloatingPointError(
                    f"{self._zo_nonfinite_streak} ZO steps in a row had a non-finite loss "
                    f"([L+, L-, L0] = {losses}); training stopped. Lower the learning rate or eps, check the data, or "
                    "use fp32 weights; raise `zo.max_nonfinite` to tolerate more."
                )
        self._step_schedulers("step")
        eps = plan[0].eps
        total = time.perf_counter() - started
        forward = sum(e.forward_seconds for e in estimates)
        metrics = {
            "train/loss": loss,
            "train/projected_grad": torch.stack([e.difference for e in estimates]).mean() / eps,
            "train/lr": float(optimizer.param_groups[0]["lr"]),
            "train/eps": eps,
            "train/time_forward": forward,
            "train/time_perturb_update": max(total - forward, 0.0),
            "train/steps_per_sec": 1.0 / total if total > 0 else 0.0,
            "train/nonfinite_steps": float(self.zo_nonfinite_steps),
        }
        if samples:
            metrics["train/samples_per_sec"] = samples / total if total > 0 else 0.0
        for name, value in metrics.items():
            shown = name in ("train/loss", "train/projected_grad")
            LightningModule.log(self, name, value, prog_bar=shown, on_step=True, on_epoch=False, batch_size=1)

    def _batch_size(self, batch: Any) -> int | None:
        if batch is None:
            return None
        try:
            return int(extract_batch_size(batch))
        except Exception:  # noqa: BLE001 - a batch without tensors just has no throughput figure
            return None

    @override
    def on_train_epoch_end(self) -> None:
        self._step_schedulers("epoch")

    def _step_schedulers(self, interval: str) -> None:
        """Lightning does not step schedulers under manual optimization; the ZO step does, honouring each
        scheduler config's ``interval``, ``frequency`` and (for ReduceLROnPlateau) ``monitor``."""
        trainer = self.trainer
        count = trainer.global_step if interval == "step" else trainer.current_epoch + 1
        config: LRSchedulerConfig
        for config in trainer.lr_scheduler_configs:
            if config.interval != interval or count % config.frequency != 0:
                continue
            if config.reduce_on_plateau:
                monitor = trainer.callback_metrics.get(config.monitor) if config.monitor else None
                if monitor is None:
                    if config.strict:
                        raise KeyError(
                            f"The ReduceLROnPlateau scheduler monitors {config.monitor!r}, which has not been logged; "
                            f"logged: {sorted(trainer.callback_metrics)}."
                        )
                    continue
                config.scheduler.step(monitor)
            else:
                config.scheduler.step()

    # ----------------------------------------------------------------------------------------------- logging

    @override
    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """As ``LightningModule.log``; inside the ZO evaluations the value is held and logged once per step."""
        if self._zo_log_buffer is not None:
            if args:
                raise TypeError("Inside a ZO training_step, pass `self.log` options by keyword.")
            self._zo_log_buffer.append((name, value, kwargs))
            return
        super().log(name, value, *args, **kwargs)

    def _replay_logs(self, logged: list[tuple[str, Any, dict[str, Any]]]) -> None:
        """Log each name held during the evaluations once: numbers averaged over the evaluations, other objects
        (e.g. torchmetrics metrics, updated by the user's code) as last given."""
        grouped: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
        for name, value, kwargs in logged:
            grouped.setdefault(name, []).append((value, kwargs))
        for name, entries in grouped.items():
            values = [value for value, _ in entries]
            kwargs = entries[-1][1]
            if all(isinstance(v, (Tensor, int, float)) and torch.as_tensor(v).numel() == 1 for v in values):
                value: Any = torch.stack([torch.as_tensor(v, dtype=torch.float32).detach().cpu() for v in values]).mean()
            else:
                value = values[-1]
            LightningModule.log(self, name, value, **kwargs)

    @override
    def setup(self, stage: str) -> None:
        # The ZO settings are part of the run's hyperparameters (logged and checkpointed).
        self.hparams["zo"] = asdict(self.zo_config)
        if stage == "fit":
            self._check_trainer()

    def _check_trainer(self) -> None:
        """Strategy, placement and precision checks, run at ``setup`` and again before the first step (in case a
        subclass overrides ``setup`` without calling ``super().setup``)."""
        if self._zo_checked:
            return
        self._zo_checked = True
        trainer = self.trainer
        sharded = sharded_strategy_name(trainer.strategy)
        if sharded is not None:
            strategy = type(trainer.strategy).__name__
            strategy = strategy if strategy == sharded else f"{strategy} (a {sharded})"
            raise ValueError(
                f"ZO training does not support {strategy}: it shards or re-owns the parameters, so in-place "
                "perturbations are lost or misplaced. Use a single device, DDP ('ddp', 'ddp_spawn', 'ddp_fork'), or "
                "Hugging Face `device_map` placement on one process."
            )
        # Offloaded weights (accelerate hooks) live on 'meta' and are re-loaded from their offload copy for each
        # forward: an in-place perturbation or update of a trainable one would be silently lost. Frozen ones are
        # refused too, since Lightning moves the whole module to its device, which fails on 'meta' tensors.
        offloaded = [(name, p.requires_grad) for name, p in self.named_parameters() if p.device.type == "meta"]
        if offloaded:
            trainable = [name for name, requires_grad in offloaded if requires_grad]
            raise ValueError(
                f"{len(offloaded)} parameter(s) ({len(trainable)} trainable) are on the 'meta' device, e.g. "
                f"{(trainable or [name for name, _ in offloaded])[:3]}: they are offloaded (a Hugging Face "
                "`device_map` with 'disk' entries, or 'cpu' entries beside accelerator ones; `accelerate.cpu_offload` "
                "or `disk_offload`) and hooks re-load them for each forward, so ZO's in-place perturbations and "
                "updates would be silently lost. Place every parameter on a real device: a `device_map` with no "
                "'disk' or offloaded 'cpu' entries (enough `max_memory` on the devices it uses), and no offload."
            )
        plugin = trainer.precision_plugin
        if getattr(plugin, "scaler", None) is not None:
            # A GradScaler protects gradients from underflow in backward; ZO has no backward, and the scaler's step
            # asserts when no gradient was unscaled. Autocast itself stays on.
            plugin.scaler = None
            rank_zero_info("zolightning: ZO has no backward pass, so the 16-mixed GradScaler is disabled (autocast stays).")
        if str(trainer.precision) in ("bf16-true", "16-true", "bf16", "16"):
            rank_zero_warn(
                f"precision={trainer.precision!r} keeps the weights themselves in half precision: the ZO step restores "
                "them exactly from a snapshot, but with the default `low_precision='nearest'` of the ZO optimizers an "
                "update smaller than half a unit in the last place rounds away: pass `low_precision='stochastic'` "
                "(unbiased, no memory) or 'master' (fp32 copies of the active tensors, cheap with BlockRotation). "
                "The projected gradient is noisier too (use a larger eps, e.g. 1e-2). Prefer 'bf16-mixed' or "
                "'32-true' when the weights fit in fp32."
            )
