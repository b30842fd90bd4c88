"""``StepEngine``: one zeroth-order step, from seed to update, in one direction.

The flow of :meth:`StepEngine.step` (``docs/architecture.md`` lists it call by call):

1. seeds: q per step, derived from (``zo.seed``, step, direction), rank-offset under query parallelism;
2. plan: the update rule's trainable tensors with ε (``zo.eps_schedule``), through the structure, with
   ``zo.lr_scales`` (regexes and the ``by_block_size`` rule), then the rule's own preparation (HiZOO's preconditioning);
3. evaluations: the estimator walks a :class:`~zolightning.estimators.Probe` through its points, calling the
   objective (the only call out of the engine);
4. cross-rank reduce (mean) or gather (query parallelism) of the few numbers the estimator measured;
5. estimates: the estimator turns those numbers into one record per direction;
6. finite check: a non-finite step is skipped on every rank alike;
7. restore: θ back from its snapshot, or, with one arithmetic direction, fused into the update's noise pass;
8. update: the rule moves the plan's tensors along the very directions that were estimated;
9. guards: non-finite streak, divergence (an error) and a rising loss (a warning).

Nothing here calls back into a LightningModule; the engine works the same under the Trainer, Fabric, or a plain loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from zolightning.config import ZOConfig
from zolightning.engine.guards import DivergenceGuard, LossRiseGuard, NonFiniteGuard, TieGuard
from zolightning.engine.prefix_reuse import PrefixReport, PrefixReuse
from zolightning.engine.step_result import StepResult, UpdateRule
from zolightning.estimators.base import Estimator
from zolightning.estimators.probe import Probe, UpdateContext
from zolightning.estimators.registry import create_estimator
from zolightning.functional import collectives
from zolightning.functional.eps_schedule import eps_factor
from zolightning.functional.estimate import OBJECTIVE_ONLY_RETURNS_LOSS, DirectionalEstimate, LossFn
from zolightning.functional.lr_scaling import BY_BLOCK_SIZE, block_size_scale, regex_scale
from zolightning.functional.precision_eps import compute_dtype, half_precision_eps
from zolightning.functional.noise import step_seed
from zolightning.functional.perturbation import ActiveTensor, PerturbationPlan
from zolightning.functional.rounding import FULL_PRECISION
from zolightning.structures.base import PerturbationStructure, StructureRule, trainable_tensors


def _constant_loss() -> Tensor:
    """The objective of a replayed step: the weights walk through training's moves, but nothing is measured."""
    return torch.zeros(())


def _loss_pairs(estimates: list[DirectionalEstimate]) -> list[tuple[float, float]]:
    """(L+, L−) of each direction, or (L+, L(θ)) for one-sided ones; none for the forward gradient."""
    pairs = []
    for estimate in estimates:
        other = estimate.loss_minus if estimate.loss_minus is not None else estimate.loss_center
        if estimate.loss_plus is not None and other is not None:
            pairs.append((float(estimate.loss_plus), float(other)))
    return pairs


def _half_precision_floor(entry: ActiveTensor) -> ActiveTensor:
    """``entry`` with ε raised to the floor of the dtype its forward computes in (bf16: 2⁻⁹), where the cast would
    otherwise round most of the perturbation away (:mod:`~zolightning.functional.precision_eps`). Reads autocast's
    state, so under the Trainer (whose ``training_step`` runs inside the precision's autocast) ``bf16-mixed`` is
    seen; in a plain loop, step inside the autocast region for it to apply."""
    eps = half_precision_eps(entry.eps, compute_dtype(entry.param.dtype, entry.param.device.type))
    return entry if eps == entry.eps else replace(entry, eps=eps)


REENTRANT_STEP = "A ZO step was started from inside a ZO step's objective. " + OBJECTIVE_ONLY_RETURNS_LOSS


class StepEngine:
    """Owns the ZO step: seeds, plan, evaluations, cross-rank numbers, checks, restore and update.

    Args:
        config: the step's settings (:class:`~zolightning.ZOConfig`, a mapping of its fields, or ``None``).
        rule: the update stage (set later with :meth:`bind` if not given).
        structure: which tensors are perturbed and how (default: every trainable tensor, dense noise).
        estimator: how losses become estimates (default: ``config.estimator`` with ``config.num_directions``).
        module: the model, for structures that partition it (blocks, layers) and for the forward gradient.

    Attributes:
        steps: updates taken so far; the step index when :meth:`step` is not given one (plain loops).
        total_steps: the number of updates of the run, needed by a non-constant ``eps_schedule``.
        names: ``id(param) → name``, for plans and checkpoints keyed by the model's parameter names.
        last: the latest :class:`StepResult`.
        replay_source: ``step → (numbers, world size)`` of a recorded run, or ``None`` for a step to measure (the
            trajectory replay callback sets it, so that the steps it covers replay inside a fit); ``None`` by default.
    """

    def __init__(
        self,
        config: ZOConfig | Mapping[str, Any] | None = None,
        *,
        rule: UpdateRule | None = None,
        structure: PerturbationStructure | None = None,
        estimator: Estimator | None = None,
        module: nn.Module | None = None,
    ) -> None:
        self.config = ZOConfig.coerce(config)
        self.module = module
        self._prefix: PrefixReuse | None = None
        self.structure = structure if structure is not None else PerturbationStructure(distribution=self.config.distribution)
        self.estimator = (
            estimator if estimator is not None
            else create_estimator(self.config.estimator, self.config.num_directions, module)
        )
        self.rule: UpdateRule | None = None
        self.steps = 0
        self.total_steps: int | None = None
        self.names: Mapping[int, str] | None = None
        self.nonfinite = NonFiniteGuard(self.config.max_nonfinite)
        self.divergence = DivergenceGuard(self.config.divergence_factor)
        self.ties = TieGuard()
        self.loss_rise = LossRiseGuard(self.config.loss_rise_factor)
        self.accumulated: list[Tensor] = []
        self.last: StepResult | None = None
        self.running = False
        self._lr_scales: dict[str, float] = {}
        self._accumulated_seconds = 0.0
        self._factor = 1.0
        self.replay_source: Callable[[int], tuple[Tensor, int] | None] | None = None
        if rule is not None:
            self.bind(rule)

    # ------------------------------------------------------------------------------------------------ set-up

    def bind(self, rule: UpdateRule) -> None:
        """Use ``rule`` as the update stage; refuses a combination that cannot work, naming the setting to change."""
        name = type(rule).__name__
        if rule.needs_center and not self.estimator.provides_center:
            raise ValueError(
                f"{name} needs L(θ) beside L(θ ± εz), which the {type(self.estimator).__name__} estimator does not "
                "measure: use `zo.estimator: two-sided`."
            )
        if not rule.supports_many_directions and (self.estimator.directions > 1 or self.config.query_parallel):
            raise ValueError(f"{name} takes one direction per step; set `num_directions=1` and `query_parallel=False`.")
        self.rule = rule

    def install(self, rule: StructureRule, module: nn.Module | None = None, owner: object | None = None) -> None:
        """Install a structure rule (a selection or a direction rule), bound to ``module`` (default: the engine's),
        ``zo.seed`` and ``zo.distribution``; ``owner`` (default the rule itself) keeps its state. An engine without a
        module (a plain loop's optimizer) adopts ``module`` as its model, for prefix reuse."""
        if self.module is None and module is not None:
            self.module = module
        rule.bind(module if module is not None else self.module, self.config.seed, self.config.distribution)
        self.structure.install(rule, owner)

    # ------------------------------------------------------------------------------------------------ the step

    def seeds(self, step: int, rank: int = 0) -> list[int]:
        """The step's direction seeds; under query parallelism rank r owns directions r·q … r·q + q − 1, so that every
        rank can name every direction without sending seeds."""
        q = self.estimator.directions
        return [step_seed(self.config.seed, step, rank * q + k) for k in range(q)]

    def plan(self, step: int) -> PerturbationPlan:
        """The tensors step ``step`` perturbs and updates, with their directions, ε and learning-rate scales."""
        rule = self._rule()
        self._factor = self._eps_factor(step)
        tensors = rule.tensors(self.names, self._factor)
        if not tensors:
            raise ValueError(
                "The optimizer has no trainable parameters (requires_grad=True), so ZO training has nothing to "
                "perturb. Unfreeze what should be trained, e.g. `module.requires_grad_(True)` or the head's parameters."
            )
        plan = self.structure.plan(tensors, step)
        plan = [_half_precision_floor(entry) for entry in plan]
        scales = self.config.lr_scales
        if scales:
            block = 1.0
            if BY_BLOCK_SIZE in scales:
                total = sum(t.param.numel() for t in tensors)
                active = sum(entry.param.numel() for entry in plan)
                block = scales[BY_BLOCK_SIZE] * block_size_scale(active, total, self.structure.selection.block_sizes())
            plan = [replace(entry, lr_scale=block * self._lr_scale(entry.name)) for entry in plan]
        return rule.prepare_plan(plan)

    @torch.no_grad()
    def step(
        self, objective: LossFn | None, *, step: int | None = None, update: bool = True,
        recorded: Tensor | None = None, recorded_world: int = 1,
    ) -> Tensor:
        """One ZO step on the current batch; returns the loss at θ (mean over directions).

        Args:
            objective: returns the loss (a scalar) at the current weights; called 2 or more times (see the estimator).
            step: the step index the seeds derive from (default: :attr:`steps`; the Trainer passes ``global_step``).
            update: ``False`` only measures this micro-batch along the step's directions and keeps its numbers; the
                next call with ``update=True`` averages every kept micro-batch with its own and updates (gradient
                accumulation, equal to one larger batch).
            recorded: replay (:mod:`zolightning.trajectory`): the step's :attr:`StepResult.numbers` as recorded,
                used instead of measuring (``objective`` is then ignored, and nothing crosses ranks). The weights
                still go through the same moves as in training where those round (an arithmetic restore), with a
                constant objective, so the update lands on bitwise the same θ; replay each accumulated micro-batch
                with ``update=False`` and the same ``recorded`` first.
            recorded_world: the world size the numbers were recorded under (query parallelism names every rank's
                seeds from it).

        Whatever happens inside (an exception in a forward or in a collective, a non-finite loss), the weights are
        restored before this returns or raises: bitwise from a snapshot, or arithmetically within 2 ulp in fp32.
        """
        if self.running:
            raise RuntimeError(REENTRANT_STEP)
        rule = self._rule()
        started = time.perf_counter()
        index = self.steps if step is None else step
        if recorded is None and self.replay_source is not None:
            recorded, recorded_world = self.replay_source(index) or (None, 1)
        replaying = recorded is not None
        world = recorded_world if replaying else collectives.world_size()
        parallel = self.config.query_parallel and world > 1
        local_seeds = self.seeds(index, collectives.rank() if parallel and not replaying else 0)
        plan = self.plan(index)
        center = rule.needs_center
        reduce = collectives.mean_over_ranks if world > 1 and not parallel and not replaying else None
        restore = self._restore_mode(plan, parallel)
        if replaying:
            # Only moves that round need replaying: arithmetic perturb/restore adds (a snapshot restore is exact).
            walks = restore == "arithmetic" and bool(self.estimator.points(center))
            objective = _constant_loss if walks else None
        session = self._prefix_session(plan) if objective is not None and not replaying else None
        if session is not None:
            objective = session.wrap(objective)
        probe = Probe(objective, plan, restore, reduce)
        self.running = True
        try:
            if not replaying or objective is not None:  # a replay that walks measures zeros: the record counts
                numbers = self.estimator.measure(probe, local_seeds, center)
            numbers = recorded if replaying else numbers
            every_seed = [s for r in range(world) for s in self.seeds(index, r)] if parallel else local_seeds
            if not update:
                self.accumulated.append(numbers)
                self._accumulated_seconds += probe.forward_seconds
                estimates = self.estimator.combine(numbers, every_seed if replaying else local_seeds, center)
                prefix = session.close() if session is not None else None  # the `finally` below finds it closed
                return self._finish(
                    estimates, False, index, plan, probe.forward_seconds, started, prefix, numbers, micro_batches=0
                ).loss
            micro_batches = len(self.accumulated) + 1
            if self.accumulated:
                numbers = torch.stack([*self.accumulated, numbers]).mean(0)
                self.accumulated = []
            if replaying:
                numbers = recorded
            elif parallel:
                numbers = collectives.gather_over_ranks(numbers).flatten(0, 1)
            elif reduce is not None:
                numbers = reduce(numbers)
            estimates = self.estimator.combine(numbers, every_seed, center)
            finite = all(estimate.is_finite for estimate in estimates)
            fused = len(estimates) == 1 and not probe.exact
            if not fused:
                probe.restore()
            if finite:
                rule.update(plan, estimates, UpdateContext(probe, self.config.clip, exact_restore=probe.exact))
        finally:
            self.running = False
            probe.restore()
            prefix = session.close() if session is not None else None
        self.steps = index + 1
        forward, self._accumulated_seconds = probe.forward_seconds + self._accumulated_seconds, 0.0
        result = self._finish(estimates, finite, index, plan, forward, started, prefix, numbers, micro_batches)
        self.nonfinite.observe(estimates)
        self.ties.observe(_loss_pairs(estimates), result.eps)
        if finite:
            rates = [float(g["lr"]) for g in rule.param_groups]
            self.divergence.observe(float(result.loss), rates)
            self.loss_rise.observe(float(result.loss), rates)
        return result.loss

    def _finish(
        self, estimates: list[DirectionalEstimate], updated: bool, index: int, plan: PerturbationPlan, forward: float,
        started: float, prefix: PrefixReport | None = None, numbers: Tensor | None = None, micro_batches: int = 1,
    ) -> StepResult:
        eps = plan[0].eps if plan else 0.0
        groups = self._rule().param_groups
        self.last = StepResult(
            loss=torch.stack([estimate.loss for estimate in estimates]).mean(),
            estimates=estimates,
            updated=updated,
            step=index,
            eps=eps,
            projected_gradient=(
                sum(e.projected_gradient(eps, self.config.clip) for e in estimates) / len(estimates) if eps else 0.0
            ),
            active_numel=sum(entry.param.numel() for entry in plan),
            forward_seconds=forward,
            total_seconds=time.perf_counter() - started,
            prefix=prefix,
            numbers=numbers,
            micro_batches=micro_batches,
            group_lr=tuple(float(group["lr"]) for group in groups),
            group_eps=tuple(self._applied_eps(group) for group in groups),
            active=tuple(entry.name for entry in plan),
        )
        return self.last

    def _applied_eps(self, group: Mapping[str, Any]) -> float:
        # A ZO optimizer's group holds the ε its plan used (from `initial_eps`); a plain torch optimizer's ε is the
        # adapter's (`zo.eps`), and its group's own `eps`, if any, is Adam's denominator term.
        if "initial_eps" in group:
            return float(group["eps"])
        return float(getattr(self.rule, "eps", 0.0)) * self._factor

    def _prefix_session(self, plan: PerturbationPlan) -> Any:
        """A prefix-reuse session for this step (``zo.prefix_reuse`` and a module to hook), else ``None``."""
        if not self.config.prefix_reuse or self.module is None:
            return None
        if self._prefix is None or self._prefix.module is not self.module:
            self._prefix = PrefixReuse(self.module)
        return self._prefix.session(plan, supported=self.estimator.reuses_prefix)

    # ------------------------------------------------------------------------------------------------ helpers

    def _rule(self) -> UpdateRule:
        if self.rule is None:
            raise RuntimeError("The engine has no update rule yet: pass `rule=` or call `bind(optimizer)`.")
        return self.rule

    def _restore_mode(self, plan: PerturbationPlan, parallel: bool) -> Literal["arithmetic", "snapshot"]:
        # Under query parallelism ranks perturb along different directions, and +εz − εz rounds differently for each:
        # only an exact restore keeps the replicas bitwise identical.
        mode = self.config.restore
        if parallel:
            return "snapshot"
        if mode == "auto":
            exact = all(entry.param.dtype in FULL_PRECISION for entry in plan)
            return "snapshot" if self.structure.selection.prefers_snapshot or not exact else "arithmetic"
        return mode

    def _eps_factor(self, step: int) -> float:
        config = self.config
        if config.eps_schedule == "constant":
            return 1.0
        if self.total_steps is None or self.total_steps <= 0:
            raise ValueError(
                f"`eps_schedule: {config.eps_schedule}` needs the run's length: set `engine.total_steps` (the Trainer "
                "sets it from `max_steps`)."
            )
        return eps_factor(config.eps_schedule, step, self.total_steps, config.eps_final_ratio)

    def _lr_scale(self, name: str) -> float:
        """``zo.lr_scales``' multiplier for the parameter ``name`` (the first matching regex; 1 if none)."""
        if name not in self._lr_scales:
            self._lr_scales[name] = regex_scale(self.config.lr_scales, name)
        return self._lr_scales[name]

    # ------------------------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Counters, guards, and the state of structure rules no callback owns (for ``fabric.save`` and plain loops)."""
        return {
            "steps": self.steps,
            "nonfinite": self.nonfinite.state_dict(),
            "divergence": self.divergence.state_dict(),
            "ties": self.ties.state_dict(),
            "loss_rise": self.loss_rise.state_dict(),
            "structure": self.structure.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))
        self.nonfinite.load_state_dict(state.get("nonfinite", {}))
        self.divergence.load_state_dict(state.get("divergence", {}))
        self.ties.load_state_dict(state.get("ties", {}))
        self.loss_rise.load_state_dict(state.get("loss_rise", {}))
        devices = None
        if self.rule is not None:
            tensors = trainable_tensors(self.rule.param_groups, self.names, eps_of=lambda group: 0.0)
            devices = {t.name: t.param.device for t in tensors}
        self.structure.load_state_dict(state.get("structure", {}), devices)
