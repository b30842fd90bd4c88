"""What a ZO run needs of the Lightning Trainer: strategies that keep parameters whole, real devices, a precision
plugin without a GradScaler, and schedulers stepped by hand (Lightning does not step them under manual optimization)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.types import LRSchedulerConfig
from torch import nn, optim

from zolightning.engine.shards import is_sharded
from zolightning.functional.rounding import FULL_PRECISION
from zolightning.optim.gradient_update import sharded_weights_error

# Strategies whose parameters ZO cannot move in place: FSDP1 flattens and re-owns them, DeepSpeed keeps fp32 masters
# that overwrite in-place edits.
REFUSED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy")
# The strategy that shards parameters as DTensors (FSDP2's `fully_shard` in `configure_model`): ZO moves each rank's
# shard in place (zolightning/engine/shards.py).
FSDP2_STRATEGY = "ModelParallelStrategy"
# Every strategy that does not keep each parameter whole on every rank.
SHARDED_STRATEGIES = (*REFUSED_STRATEGIES, FSDP2_STRATEGY)


def sharded_strategy_name(strategy: object) -> str | None:
    """The name in ``SHARDED_STRATEGIES`` of ``strategy``'s class or of a class it derives from (a subclass of
    ``FSDPStrategy`` shards as ``FSDPStrategy`` does), else ``None``."""
    for cls in type(strategy).__mro__:
        if cls.__name__ in SHARDED_STRATEGIES:
            return cls.__name__
    return None


def check_zo_callback(
    callback: str, purpose: str, trainer: Any, module: nn.Module, backprop_hint: str = "", allow_fsdp2: bool = False
) -> None:
    """What a callback that works on ZO steps needs, checked in its ``setup``: a ZO module (the caller passes whether
    it is one: this layer does not import the module), ZO training, and a strategy that keeps parameters whole (or
    FSDP2's shards, for a callback that works on them: ``allow_fsdp2``).

    Args:
        callback: the callback's name; ``purpose``: what it does ("measures zeroth-order steps").
        backprop_hint: what to use instead under ``zo.gradient: backprop``.
    """
    config = getattr(module, "zo_config", None)
    if config is None:
        raise TypeError(
            f"{callback} {purpose}; it needs a ZOLightningModule (subclass it, or wrap the module with "
            f"`zolightning.as_zo`), got {type(module).__name__}."
        )
    if config.gradient == "backprop":
        raise ValueError(f"{callback} {purpose}, but `zo.gradient: backprop` trains by backprop.{backprop_hint}")
    sharded = sharded_strategy_name(trainer.strategy)
    if sharded is not None and not (allow_fsdp2 and sharded == FSDP2_STRATEGY):
        raise ValueError(
            f"{callback} needs each parameter whole and under its own name, which {sharded} does not keep. Use a "
            "single device or a DDP strategy ('ddp', 'ddp_spawn', 'ddp_fork')."
        )


def check_trainer_for_zo(trainer: Any, module: nn.Module) -> None:
    """Refuse strategies and placements that would lose in-place perturbations; disable the GradScaler of 16-mixed;
    warn about half-precision weights."""
    sharded = sharded_strategy_name(trainer.strategy)
    if sharded in REFUSED_STRATEGIES:
        strategy = type(trainer.strategy).__name__
        strategy = strategy if strategy == sharded else f"{strategy} (a {sharded})"
        raise ValueError(
            f"ZO training does not support {strategy}: it shards or re-owns the parameters, so in-place "
            "perturbations are lost or misplaced. To shard the weights, use Lightning's ModelParallelStrategy with "
            "FSDP2's `fully_shard` in `configure_model` (each rank then moves its own shards); otherwise a single "
            "device, DDP ('ddp', 'ddp_spawn', 'ddp_fork'), or Hugging Face `device_map` placement on one process."
        )
    # Offloaded weights (accelerate hooks) live on 'meta' and are re-loaded from their offload copy for each
    # forward: an in-place perturbation or update of a trainable one would be silently lost. Frozen ones are
    # refused too, since Lightning moves the whole module to its device, which fails on 'meta' tensors.
    offloaded = [(name, p.requires_grad) for name, p in module.named_parameters() if p.device.type == "meta"]
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
            "them exactly from a snapshot, and the ZO optimizers write updates with stochastic rounding by default "
            "(`low_precision='stochastic'`; 'master' keeps fp32 copies of the active tensors instead), so updates "
            "below half a unit in the last place are not lost. eps is raised to at least 2^-8 (3.9e-3; fp16: 2^-11) "
            "for half-precision weights, below which rounding hides the perturbation. Prefer 'bf16-mixed' or "
            "'32-true' when the weights fit in fp32."
        )


def check_optimizer_for_zo(module: nn.Module, config: Any, optimizer: Any, zo_optimizer: bool, default: bool) -> None:
    """Every check of the optimizer a fit binds, in ``on_fit_start`` before its first step: who owns each setting
    (refused), half-precision updates (warned), an adaptive optimizer on ZO estimates (warned), a ``torch.optim``
    optimizer fed by ZO on sharded weights (refused). ``zo_optimizer``/``default``: see :func:`check_setting_owners`."""
    check_setting_owners(config, optimizer, zo_optimizer, default)
    zo_estimates = config.gradient != "backprop"
    check_half_precision_updates(module, optimizer, zo_optimizer)
    check_adaptive_optimizer(optimizer, zo_estimates=zo_estimates)
    check_sharded_update(module, optimizer, fed_by_zo=zo_estimates and not zo_optimizer)


def check_setting_owners(config: Any, optimizer: Any, zo_optimizer: bool, default: bool) -> None:
    """Refuse a setting with two owners: ``zo.lr``, ``zo.weight_decay`` or ``zo.eps`` beside an optimizer that has
    its own (a ZO optimizer owns all three; a plain ``torch.optim`` one lr and weight decay, and takes ε from
    ``zo.eps``), and a ZO optimizer under ``zo.gradient: backprop``. ``default``: the optimizer is the module's default,
    built from ``zo.lr``, ``zo.eps`` and ``zo.weight_decay``; ``zo_optimizer``: it is a ZO one (the caller says: this
    layer does not import the optimizers' classes)."""
    name = type(optimizer).__name__
    if config.gradient == "backprop" and zo_optimizer:
        raise ValueError(
            f"`zo.gradient: backprop` trains with a first-order optimizer, but the optimizer is {name}, a ZO one. "
            "Configure a torch.optim optimizer (e.g. `optimizer: torch.optim.Adam` with `lr: 1e-5` in YAML), or set "
            "`zo.gradient: zeroth_order`."
        )
    if zo_optimizer:
        owned = {"lr": config.lr, "weight_decay": config.weight_decay} if not default else {}
        owned["eps"] = None if default else config.eps
        duplicated = [setting for setting, value in owned.items() if value is not None]
        if duplicated:
            raise ValueError(
                f"`zo.{duplicated[0]}` is set, but {name} has its own `{duplicated[0]}`: the optimizer owns lr, eps "
                "and weight_decay. Remove it from `zo:` and set it on the optimizer (e.g. `optimizer.init_args.eps` "
                "in YAML)."
            )
        return
    for setting in ("lr", "weight_decay"):
        if getattr(config, setting) is not None:
            raise ValueError(f"`zo.{setting}` is set, but {name} has its own: set it on the optimizer.")


def check_half_precision_updates(module: Any, optimizer: Any, zo_optimizer: bool) -> None:
    """Warn when half-precision trainable weights would silently lose small updates: a ZO optimizer group set to
    ``low_precision='nearest'``, or a plain ``torch.optim`` optimizer (which writes updates rounded to nearest and has
    no option against it)."""
    half = [name for name, p in module.named_parameters() if p.requires_grad and p.dtype not in FULL_PRECISION]
    if not half:
        return
    if zo_optimizer:
        if any(group.get("low_precision") == "nearest" for group in optimizer.param_groups):
            rank_zero_warn(
                f"{len(half)} trainable tensor(s) are in half precision (e.g. {half[0]}) and the optimizer has "
                "`low_precision='nearest'`: updates below half a unit in the last place round away, so small steps "
                "do not train. Use `low_precision='stochastic'` (the default) or 'master'."
            )
        return
    rank_zero_warn(
        f"{len(half)} trainable tensor(s) are in half precision (e.g. {half[0]}) and {type(optimizer).__name__} "
        "writes its updates into them rounded to nearest: updates below half a unit in the last place are lost, and "
        "it has no setting against that. Use a ZO optimizer (`zolightning.optim.ZOSGD` or `ZOAdam`, which round "
        "stochastically by default), or keep fp32 weights with `precision='bf16-mixed'`."
    )


# torch.optim optimizers that divide each coordinate's step by its own running scale (subclasses count too). The ZO
# optimizers (`zolightning.optim`, ZOAdam included) derive from none of them.
ADAPTIVE_OPTIMIZERS: tuple[type[optim.Optimizer], ...] = (
    optim.Adam, optim.AdamW, optim.Adamax, optim.NAdam, optim.RAdam, optim.RMSprop, optim.Adagrad,
)
ADAPTIVE_LR_LIMIT = 1e-4
"""The largest lr at which an adaptive optimizer on ZO estimates passes without a warning: each weight then moves by
at most about 1e-4 per step."""


def check_sharded_update(module: nn.Module, optimizer: Any, fed_by_zo: bool) -> None:
    """Refuse, before the first step, a plain ``torch.optim`` optimizer fed by ZO (``fed_by_zo``) on sharded (FSDP2)
    weights."""
    if fed_by_zo and any(is_sharded(p) for p in module.parameters() if p.requires_grad):
        raise sharded_weights_error(optimizer)


def check_adaptive_optimizer(optimizer: Any, zo_estimates: bool) -> None:
    """Warn when an adaptive ``torch.optim`` optimizer (:data:`ADAPTIVE_OPTIMIZERS`) steps on ZO estimates with an lr
    above :data:`ADAPTIVE_LR_LIMIT` (1e-4) in any param group. ``zo_estimates``: whether its gradients are ZO
    estimates (``False`` under ``zo.gradient: backprop``, where Adam is the right tool).

    Why: the estimate g·z is one number times a random direction, and dividing each coordinate by its own scale
    turns it into a ±lr step of every weight: a random walk of size lr per step that the loss cannot follow down.
    """
    if not zo_estimates or not isinstance(optimizer, ADAPTIVE_OPTIMIZERS):
        return
    lr = max(float(group["lr"]) for group in optimizer.param_groups)
    if lr <= ADAPTIVE_LR_LIMIT:
        return
    name = type(optimizer).__name__
    rank_zero_warn(
        f"{name}(lr={lr:g}) steps on zeroth-order estimates, and {name} normalises each coordinate by its own "
        "running scale: the estimate g·z is one number times a random direction (rank one), so that normalisation "
        f"makes it a move of about ±lr = {lr:g} of every weight, in a random direction, at each step, and the loss "
        "tends to drift up instead of down. Use a ZO optimizer: `zolightning.optim.ZOSGD` (MeZO's ZO-SGD), or "
        "`ZOAdam` (Adam's moments over the ZO estimate) at lr 1e-4 or below (also `ZOSGDSign`, `ZOSGDCons`, "
        f"`HiZOO`); or keep {name} with lr <= {ADAPTIVE_LR_LIMIT:g}. The `zolightning.callbacks.ZOLearningRateFinder` "
        "callback measures a learning rate for the run."
    )


def optimizer_step_watched(trainer: Any, module: Any) -> bool:
    """Whether anything reads the model in Lightning's ``on_before_optimizer_step``: the module or a callback
    overrides it. If not, a ZO optimizer's step may leave θ at its last evaluation point for the update's noise pass
    to bring back (one pass of noise fewer); if so, θ is restored before those hooks run."""
    if is_overridden("on_before_optimizer_step", module, LightningModule):
        return True
    return any(is_overridden("on_before_optimizer_step", callback, Callback) for callback in trainer.callbacks)


def step_schedulers(trainer: Any, interval: str) -> None:
    """Step the Trainer's LR schedulers whose ``interval`` is ``interval``, honouring each config's ``frequency`` and
    (for ReduceLROnPlateau) ``monitor``: Lightning does not step them under manual optimization."""
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
