"""``ZOConfig``: the settings of the ZO step, read by the step engine and the module (one owner for each setting)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from zolightning.estimators.registry import check_estimator_name
from zolightning.functional.checks import check_choice, check_int_at_least, check_non_negative, unknown_options_message
from zolightning.functional.eps_schedule import EpsSchedule, check_eps_schedule
from zolightning.functional.lr_scaling import check_lr_scales
from zolightning.functional.estimate import RestoreMode
from zolightning.functional.noise import Distribution, NoiseSource, check_distribution, check_noise_source

GradientSource = Literal["zeroth_order", "backprop"]
"""Where a step's update comes from: two-point ZO estimates (the engine) or backpropagation (the baseline)."""


@dataclass(frozen=True)
class ZOConfig:
    """How the zeroth-order step runs: the ``zo:`` key of a :class:`~zolightning.ZOLightningModule`, and the settings
    of a :class:`~zolightning.engine.StepEngine` in any loop.

    Frozen and shared: the module's ``zo_config`` is its engine's ``config``, the same object; a change makes a new
    one (``dataclasses.replace(config, seed=1)``, or ``as_zo(module, ...)``, which rebuilds the engine with it).

    Who owns what: the optimizer owns lr, ε and weight decay (per param group, like any ``torch.optim`` setting);
    this config owns everything else. ``eps``, ``lr`` and ``weight_decay`` here only give the initial values where
    there is no ZO optimizer to hold them (the default optimizer, or ε in a plain ``torch.optim`` optimizer's groups),
    and setting them beside one is an error that names both.

    Attributes:
        seed: base seed of the perturbation directions; the step seed mixes it with the step counter
            (``trainer.global_step`` in Lightning). Structure rules use it too, unless given their own ``seed``
            explicitly (default 0). The only seed of the step: optimizers take none.
        eps: the initial ε of a plain ``torch.optim`` optimizer's groups (written there as ``zo_eps``: it has no ε
            of its own) and of the default optimizer (unset: 1e-3, MeZO's). A ZO optimizer's ε is its own ``eps``.
        lr: the default optimizer's learning rate, used only when no optimizer is configured (unset: 1e-6, MeZO's).
        weight_decay: the default optimizer's weight decay, likewise (unset: 0).
        eval_mode: run the forwards in eval mode: dropout off, BatchNorm statistics untouched (default True, as in
            MeZO). The modules' train/eval flags are restored after the step.
        distribution: ``gaussian`` (default) or ``rademacher`` noise, for every rule that does not set its own.
        noise: where z's random numbers come from. ``counter`` (default): counter-based Philox noise, element i of a
            tensor's z a pure function of (step seed, tensor, i), generated inside fused in-place passes (numba on
            CPU, Triton on GPU, a pure-torch reference elsewhere: the same values everywhere, at any thread count,
            for any split of a tensor). ``torch``: a ``torch.Generator`` per chunk drawn into a buffer, then added:
            the noise of runs made before this setting existed (a trajectory log without it replays with it).
            See :mod:`zolightning.functional.counter_noise`.
        restore: how the weights come back after the forwards: ``snapshot`` (a copy of the active tensors, exact in
            any dtype), ``arithmetic`` (−εz, within 2 ulp in fp32, no copy) or ``auto`` (default: snapshot below fp32
            and for selections that prefer it, such as one block at a time; arithmetic otherwise).
        max_nonfinite: a step whose losses are not finite is skipped; this many in a row stop training (default 5).
        num_directions: q directions per step, their estimates averaged (n-SPSA; FZOO's N probes) (default 1).
        query_parallel: under data parallelism, each rank estimates its own q directions on its own batch and every
            rank applies all of them (world·q directions a step for the price of gathering a few losses per rank),
            instead of averaging the losses of shared directions (default False).
        estimator: ``two-sided`` (default; L(θ ± εz)), ``one-sided`` (L(θ + εz) − L(θ)), ``forward-gradient`` (the
            exact ∇L·z by forward-mode AD: no ε-bias, but tangents cost memory) or ``fzoo`` (FZOO: N one-sided probes
            around one L(θ), normalized by their spread; N = ``num_directions`` ≥ 2). See
            :mod:`zolightning.estimators`.
        accumulate_batches: k micro-batches per update (default 1). Each micro-batch is estimated along the same
            directions and the losses are averaged, which equals one k× larger batch; ``max_steps`` and the
            schedulers count updates. The last batch of an epoch updates with a partial group, as in Lightning.
        clip: clip each direction's projected gradient g to [−clip, clip] (default ``None``: no clipping).
        eps_schedule: how ε changes over training: ``constant`` (default), ``linear``, ``cosine`` or ``geometric``,
            from the optimizer's ε to ``eps_final_ratio``·ε at the last step (``trainer.max_steps``, or the
            estimated number of updates). Like an LR scheduler it writes each group's ε before a step, and a value
            written into a group since (``group["eps"] = x``) is that step's ε and the schedule's new base
            (:class:`~zolightning.engine.eps_scheduler.EpsScheduler`).
        eps_final_ratio: ε at the end over ε at the start, for a non-constant ``eps_schedule`` (default 0.1).
        lr_scales: multipliers on the learning rate of the tensors a step updates, for every optimizer and
            structure (default none):

            - ``{parameter-name regex: multiplier}``: the first matching regex wins, e.g. ``{"^head\\\\.": 100}``
              for a new head on a pretrained body, or ``{"layers\\\\.11\\\\.": 2}`` for one block;
            - ``by_block_size``: each step's lr is multiplied by (D + 2) / (d + 2), where d counts the coordinates
              the step perturbs (its block's, under block rotation) and D those of every trainable tensor. ZO-SGD's
              best step along a d-dimensional Gaussian direction is 1 / (λ·(d + 2)) for a curvature λ per coordinate
              (:func:`~zolightning.functional.lr_scaling.block_size_scale` derives it), so one lr, the dense lr,
              then suits blocks of any size: a 28M-weight embedding block gets 8× less than a 3.5M-weight layer.
              Blocks below the median block size count as median-sized (a norm's coordinates are far more curved
              than a matrix's). Dense steps are unchanged (d = D);
            - both: ``{"by_block_size": 1, "^head\\\\.": 10}`` (the key ``by_block_size`` is the rule, the others
              regexes; the multipliers multiply).
        divergence_factor: stop with an error naming the learning rate when the loss stays more than this many times
            its starting scale above its best value for 3 updates in a row: the signature of a backprop learning rate
            used for ZO (default 100; ``None`` turns the check off).
        loss_rise_factor: warn once (training goes on) when the median of the last 50 update losses grows to more
            than this many times its best: a learning rate a few times too large for ZO, far below
            ``divergence_factor`` (default 2; ``None`` turns the warning off;
            :class:`~zolightning.engine.guards.LossRiseGuard`).
        gradient: ``zeroth_order`` (default): every step is a ZO step of the engine. ``backprop``: the same module
            trains by backpropagation with its (plain ``torch.optim``) optimizer instead, one ``backward`` per step
            (``accumulate_batches`` micro-batches per update), for a first-order baseline in the same task, one
            switch away. Structures, ε and the ZO estimator settings do not apply then.
        prefix_reuse: when a step's active tensors all run after some layers of a layer stack (one block of
            MeZO-BCD, say), compute those layers once per step instead of at every evaluation (default True). Exact:
            the skipped layers' output is bitwise what they would compute; where that cannot be checked, the step runs
            in full and ``train/prefix_reuse`` reads 0 (:mod:`zolightning.engine.prefix_reuse`).
    """

    seed: int = 0
    eps: float | None = None
    lr: float | None = None
    weight_decay: float | None = None
    eval_mode: bool = True
    distribution: Distribution = "gaussian"
    noise: NoiseSource = "counter"
    restore: RestoreMode = "auto"
    max_nonfinite: int = 5
    num_directions: int = 1
    query_parallel: bool = False
    estimator: str = "two-sided"
    accumulate_batches: int = 1
    clip: float | None = None
    eps_schedule: EpsSchedule = "constant"
    eps_final_ratio: float = 0.1
    lr_scales: dict[str, float] | Literal["by_block_size"] = field(default_factory=dict)
    divergence_factor: float | None = 100.0
    loss_rise_factor: float | None = 2.0
    gradient: GradientSource = "zeroth_order"
    prefix_reuse: bool = True

    def __post_init__(self) -> None:
        if self.eps is not None and not self.eps > 0:
            raise ValueError(
                f"`eps` must be > 0, got {self.eps}. It is the perturbation scale ε; MeZO uses 1e-3 for full "
                "fine-tuning, 1e-2 for LoRA."
            )
        if self.lr is not None:
            check_non_negative(self.lr, "lr")
        if self.weight_decay is not None:
            check_non_negative(self.weight_decay, "weight_decay")
        check_distribution(self.distribution)
        check_noise_source(self.noise, "zo.noise")
        check_choice(self.restore, RestoreMode, "restore")
        check_choice(self.gradient, GradientSource, "gradient")
        check_int_at_least(self.num_directions, 1, "num_directions")
        check_estimator_name(self.estimator)
        check_int_at_least(self.accumulate_batches, 1, "accumulate_batches")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"`clip` must be > 0 or None (no clipping), got {self.clip}.")
        check_eps_schedule(self.eps_schedule, self.eps_final_ratio)
        object.__setattr__(self, "lr_scales", check_lr_scales(self.lr_scales))  # frozen: normalised once, here
        check_int_at_least(self.max_nonfinite, 1, "max_nonfinite")
        if self.divergence_factor is not None and not self.divergence_factor > 1:
            raise ValueError(f"`divergence_factor` must be > 1 or None (no check), got {self.divergence_factor}.")
        if self.loss_rise_factor is not None and not self.loss_rise_factor > 1:
            raise ValueError(f"`loss_rise_factor` must be > 1 or None (no warning), got {self.loss_rise_factor}.")

    @classmethod
    def coerce(cls, value: ZOConfig | Mapping[str, Any] | None, **overrides: Any) -> ZOConfig:
        """A config from an instance, a mapping (e.g. YAML), or ``None`` (defaults), with ``overrides`` applied. An
        instance without overrides is returned as it is (shared, not copied).

        Raises:
            TypeError: an unknown option name, listing the known ones.
        """
        if isinstance(value, ZOConfig) and not overrides:
            return value
        if value is None:
            base: dict[str, Any] = {}
        elif isinstance(value, ZOConfig):
            base = asdict(value)
        elif isinstance(value, Mapping):
            base = dict(value)
        else:
            raise TypeError(f"`zo` must be a ZOConfig, a mapping or None, got {type(value).__name__}.")
        base.update(overrides)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(base) - known)
        if unknown:
            raise TypeError(unknown_options_message("ZO", unknown, known))
        return cls(**base)
