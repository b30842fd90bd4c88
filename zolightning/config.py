"""``ZOConfig``: the settings of the ZO step that belong to the module rather than to the optimizer."""

from __future__ import annotations

import re

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from zolightning.functional.eps_schedule import EpsSchedule, check_eps_schedule
from zolightning.functional.estimators import RESTORE_MODES, RestoreMode
from zolightning.functional.noise import Distribution, check_distribution

Estimator = Literal["two-sided", "one-sided", "forward-gradient"]
ESTIMATORS: tuple[str, ...] = ("two-sided", "one-sided", "forward-gradient")


@dataclass
class ZOConfig:
    """How a :class:`~zolightning.ZOLightningModule` runs its zeroth-order step.

    Attributes:
        seed: base seed of the perturbation directions; the step seed mixes it with ``trainer.global_step`` (default 0).
        eps: perturbation scale ε used with plain ``torch.optim`` optimizers and by the default optimizer.
            ZO optimizers (``zolightning.optim``) use their param groups' ``eps`` instead (default 1e-3, MeZO's).
        lr: learning rate of the default optimizer, used only when ``configure_optimizers`` is not overridden and the
            CLI gives no ``optimizer`` (default 1e-6, MeZO's for full fine-tuning).
        weight_decay: weight decay of the default optimizer (default 0).
        eval_mode: run the two forwards in eval mode: dropout off, BatchNorm statistics untouched (default True,
            as in MeZO). The modules' train/eval flags are restored after the step.
        distribution: ``gaussian`` (default) or ``rademacher`` noise for the dense structure.
        restore: how weights come back after the two forwards: ``arithmetic``, ``snapshot`` (exact in any dtype,
            costs a copy of the perturbed tensors) or ``auto`` (snapshot below fp32; default).
        max_nonfinite: a step whose losses are not finite is skipped; this many in a row stop training (default 5).
        num_directions: q directions per step, their estimates averaged (n-SPSA): 2q forwards a step (default 1).
        query_parallel: under data parallelism, each rank estimates its own q directions on its own batch and every
            rank applies all of them (world·q directions a step for the price of gathering 2·q losses per rank),
            instead of averaging the losses of shared directions (default False).
        estimator: ``two-sided`` (default; L(θ ± εz)), ``one-sided`` (L(θ + εz) − L(θ): the same 2 forwards, an
            O(ε) bias, but L(θ) itself is logged), or ``forward-gradient`` (the exact ∇L·z by forward-mode AD,
            ``torch.func.jvp``: no ε-bias, but tangents and dual activations cost memory; a baseline, as in ZO-Bench).
        accumulate_batches: k micro-batches per update (default 1). Each micro-batch is estimated along the same
            directions and the losses are averaged, which equals one k× larger batch; ``max_steps`` and the
            schedulers count updates. The last batch of an epoch updates with a partial group, as in Lightning.
        clip: clip each direction's projected gradient g to [−clip, clip] (default ``None``: no clipping).
        eps_schedule: how ε changes over training: ``constant`` (default), ``linear``, ``cosine`` or ``geometric``,
            from the optimizer's ε to ``eps_final_ratio``·ε at ``trainer.max_steps`` (or the estimated number of
            updates).
        eps_final_ratio: ε at the end over ε at the start, for a non-constant ``eps_schedule`` (default 0.1).
        lr_scales: ``{parameter-name regex: multiplier}`` on the learning rate of matching tensors (the first match
            wins; default none). It multiplies any scale a structure sets (e.g. ``BlockRotation``'s per block), and
            works with every optimizer and structure, e.g. ``{"^head\\.": 100}`` for a new head on a pretrained body.
    """

    seed: int = 0
    eps: float = 1e-3
    lr: float = 1e-6
    weight_decay: float = 0.0
    eval_mode: bool = True
    distribution: Distribution = "gaussian"
    restore: RestoreMode = "auto"
    max_nonfinite: int = 5
    num_directions: int = 1
    query_parallel: bool = False
    estimator: Estimator = "two-sided"
    accumulate_batches: int = 1
    clip: float | None = None
    eps_schedule: EpsSchedule = "constant"
    eps_final_ratio: float = 0.1
    lr_scales: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ValueError(
                f"`eps` must be > 0, got {self.eps}. It is the perturbation scale ε; MeZO uses 1e-3 for full "
                "fine-tuning, 1e-2 for LoRA."
            )
        if not self.lr >= 0:
            raise ValueError(f"`lr` must be >= 0, got {self.lr}.")
        if not self.weight_decay >= 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {self.weight_decay}.")
        check_distribution(self.distribution)
        if self.restore not in RESTORE_MODES:
            raise ValueError(f"`restore` must be one of {RESTORE_MODES}, got {self.restore!r}.")
        if not (isinstance(self.num_directions, int) and self.num_directions >= 1):
            raise ValueError(f"`num_directions` must be an integer >= 1, got {self.num_directions!r}.")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"`estimator` must be one of {ESTIMATORS}, got {self.estimator!r}.")
        if not (isinstance(self.accumulate_batches, int) and self.accumulate_batches >= 1):
            raise ValueError(f"`accumulate_batches` must be an integer >= 1, got {self.accumulate_batches!r}.")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"`clip` must be > 0 or None (no clipping), got {self.clip}.")
        check_eps_schedule(self.eps_schedule, self.eps_final_ratio)
        self.lr_scales = dict(self.lr_scales or {})
        for pattern, scale in self.lr_scales.items():
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"Invalid regex {pattern!r} in `lr_scales`: {error}.") from None
            if not float(scale) >= 0:
                raise ValueError(f"`lr_scales[{pattern!r}]` must be >= 0, got {scale}.")
        if not (isinstance(self.max_nonfinite, int) and self.max_nonfinite >= 1):
            raise ValueError(f"`max_nonfinite` must be an integer >= 1, got {self.max_nonfinite!r}.")

    @classmethod
    def coerce(cls, value: ZOConfig | Mapping[str, Any] | None, **overrides: Any) -> ZOConfig:
        """A config from an instance, a mapping (e.g. YAML), or ``None`` (defaults), with ``overrides`` applied.

        Raises:
            TypeError: an unknown option name, listing the known ones.
        """
        if value is None:
            base: dict[str, Any] = {}
        elif isinstance(value, ZOConfig):
            base = asdict(value)
        elif isinstance(value, Mapping):
            base = dict(value)
        else:
            raise TypeError(f"`zo` must be a ZOConfig, a mapping or None, got {type(value).__name__}.")
        base.update(overrides)
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(base) - known)
        if unknown:
            raise TypeError(f"Unknown ZO option(s) {unknown}; the options are {sorted(known)}.")
        return cls(**base)
