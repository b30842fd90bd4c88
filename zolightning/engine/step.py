"""``StepEngine``: the first of a ZO step's two calls, ``measure``: from seed to a :class:`Measurement`.

A step is ``update.apply(engine.measure(objective, step))``. :meth:`StepEngine.measure` runs, in order
(``docs/architecture.md`` lists it call by call):

1. seeds: q per step, derived from (``zo.seed``, step, direction), rank-offset under query parallelism
   (:class:`~zolightning.engine.cross_rank.CrossRank`);
2. plan: the update target's trainable tensors with each group's ε (the ε schedule writes it first), through the
   structure, with ``zo.lr_scales``, then the target's preconditioner (HiZOO's D);
3. evaluations: the estimator walks a :class:`~zolightning.engine.probe.Probe` through its points, calling the
   objective (the only call out of the engine);
4. the mean over accumulated micro-batches, then the cross-rank reduce (mean) or gather (query parallelism);
5. estimates: the estimator turns those numbers into one record per direction;
6. candidates: the points the update declared beyond the estimate (ZO-SGD-Cons's θ ∓ η·ĝ), evaluated and reduced;
7. finite check: a non-finite step does not update, on every rank alike;
8. restore: θ back from its snapshot or arithmetically (or, when asked and exact enough, left to the update's noise
   pass);
9. guards: non-finite streak, divergence (an error) and a rising loss (a warning).

The engine never calls the update, and nothing here calls a LightningModule: the update is data to it
(:class:`~zolightning.engine.measurement.UpdateTarget`), and its result is a plain value. It works the same under the
Trainer, Fabric, or a plain loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from zolightning.config import ZOConfig
from zolightning.engine import collectives
from zolightning.engine.cross_rank import CrossRank
from zolightning.engine.eps_scheduler import EpsScheduler
from zolightning.engine.guards import DivergenceGuard, LossRiseGuard, NonFiniteGuard, TieGuard
from zolightning.engine.measurement import Measurement, Recorded, UpdateTarget
from zolightning.engine.noise_workers import drawing_noise
from zolightning.engine.plan import group_eps, learning_rates, plan_step, restore_mode, trainable_of
from zolightning.engine.prefix_reuse import PrefixReuse
from zolightning.engine.probe import Probe
from zolightning.estimators.base import Estimator
from zolightning.estimators.registry import create_estimator
from zolightning.functional.estimate import OBJECTIVE_ONLY_RETURNS_LOSS, DirectionalEstimate, LossFn
from zolightning.functional.noise import step_seed
from zolightning.functional.perturbation import Displacement, PerturbationPlan
from zolightning.structures.base import PerturbationStructure, StructureRule, TrainableTensor


def _constant_loss() -> Tensor:
    """The objective of a replayed step: the weights walk through training's moves, but nothing is measured."""
    return torch.zeros(())


REENTRANT_STEP = "A ZO step was started from inside a ZO step's objective. " + OBJECTIVE_ONLY_RETURNS_LOSS


class StepEngine:
    """Owns the measuring half of the ZO step: seeds, plan, evaluations, cross-rank numbers, checks and restore.

    Args:
        config: the step's settings (:class:`~zolightning.ZOConfig`, a mapping of its fields, or ``None``); a
            ``ZOConfig`` is kept as it is (shared, frozen), not copied.
        structure: which tensors are perturbed and how (default: every trainable tensor, dense noise of
            ``zo.distribution``).
        estimator: how losses become estimates (default: ``config.estimator`` with ``config.num_directions``).
        module: the model, for structures that partition it (blocks, layers), the forward gradient and prefix reuse.

    Attributes:
        target: the update being measured for (:meth:`attach`), ``None`` until one is attached.
        steps: updates measured so far; the step index when :meth:`measure` is not given one (plain loops).
        total_steps: the number of updates of the run, needed by a non-constant ``eps_schedule``.
        names: ``id(param) → name``, for plans and checkpoints keyed by the model's parameter names.
        last: the latest :class:`~zolightning.engine.measurement.Measurement`.
        accumulated: the numbers of micro-batches measured with ``accumulate=True`` since the last update.
    """

    def __init__(
        self,
        config: ZOConfig | Mapping[str, Any] | None = None,
        *,
        structure: PerturbationStructure | None = None,
        estimator: Estimator | None = None,
        module: nn.Module | None = None,
    ) -> None:
        self.config = ZOConfig.coerce(config)
        self.module = module
        self._prefix: PrefixReuse | None = None
        if structure is None:
            structure = PerturbationStructure()
            for rule in (structure.selection, structure.directions):  # the defaults take zo.seed and zo.distribution
                rule.bind(module, self.config.seed, self.config.distribution)
        self.structure = structure
        self.estimator = (
            estimator if estimator is not None
            else create_estimator(self.config.estimator, self.config.num_directions, module)
        )
        self.target: UpdateTarget | None = None
        self.steps = 0
        self.total_steps: int | None = None
        self.names: Mapping[int, str] | None = None
        self.eps_schedule = EpsScheduler(self.config.eps_schedule, self.config.eps_final_ratio)
        self.nonfinite = NonFiniteGuard(self.config.max_nonfinite)
        self.divergence = DivergenceGuard(self.config.divergence_factor)
        self.ties = TieGuard()
        self.loss_rise = LossRiseGuard(self.config.loss_rise_factor)
        self.accumulated: list[Tensor] = []
        self.last: Measurement | None = None
        self.running = False
        self._lr_scales: dict[str, float] = {}
        self._accumulated_seconds = 0.0

    # ------------------------------------------------------------------------------------------------ set-up

    def attach(self, target: UpdateTarget) -> None:
        """Measure for ``target``'s update from now on (its groups, ε key, points and preconditioner); refuses a
        combination that cannot work, naming the setting to change."""
        points, name = target.points, target.name
        if points.center and not self.estimator.provides_center:
            raise ValueError(
                f"{name} needs L(θ) beside L(θ ± εz), which the {type(self.estimator).__name__} estimator does not "
                "measure: use `zo.estimator: two-sided`."
            )
        if points.one_direction and (self.estimator.directions > 1 or self.config.query_parallel):
            raise ValueError(f"{name} takes one direction per step; set `num_directions=1` and `query_parallel=False`.")
        self.target = target

    def install(self, rule: StructureRule, module: nn.Module | None = None, owner: object | None = None) -> None:
        """Install a structure rule (a selection or a direction rule), bound to ``module`` (default: the engine's),
        ``zo.seed`` and ``zo.distribution``; ``owner`` (default the rule itself) keeps its state. An engine without a
        module (a plain loop's optimizer) adopts ``module`` as its model, for prefix reuse."""
        if self.module is None and module is not None:
            self.module = module
        rule.bind(module if module is not None else self.module, self.config.seed, self.config.distribution)
        self.structure.install(rule, owner)

    # ------------------------------------------------------------------------------------------------ the plan

    def seeds(self, step: int, rank: int = 0) -> list[int]:
        """The step's direction seeds; under query parallelism rank r owns directions r·q … r·q + q − 1, so that every
        rank can name every direction without sending seeds."""
        q = self.estimator.directions
        return [step_seed(self.config.seed, step, rank * q + k) for k in range(q)]

    def trainable(self) -> list[TrainableTensor]:
        """Every tensor the target trains (``requires_grad``), by name, with its group's ε as the groups hold it now."""
        return trainable_of(self._target(), self.names)

    def plan(self, step: int) -> PerturbationPlan:
        """The tensors step ``step`` perturbs and updates, with their directions, ε and learning-rate scales
        (:func:`~zolightning.engine.plan.plan_step`). Writes each group's ε for ``step`` first when
        ``zo.eps_schedule`` is not constant (as an LR scheduler writes lr)."""
        target = self._target()
        self.eps_schedule.set(target.optimizer.param_groups, target.eps_key, step, self.total_steps)
        return plan_step(
            self.structure, target, self.names, step, self.config.lr_scales, self._lr_scales, self.config.noise
        )

    # ------------------------------------------------------------------------------------------------ measure

    @torch.no_grad()
    def measure(
        self, objective: LossFn | None, step: int | None = None, *, accumulate: bool = False,
        recorded: Recorded | None = None, defer_restore: bool = False,
    ) -> Measurement:
        """Measure one step on the current batch: the first call of ``update.apply(engine.measure(objective))``.

        Args:
            objective: returns the loss (a scalar) at the current weights; called 2 or more times (see the estimator
                and the target's points).
            step: the step index the seeds derive from (default: :attr:`steps`; the Trainer passes ``global_step``).
            accumulate: only measure this micro-batch along the step's directions and keep its numbers; the next call
                without it averages every kept micro-batch with its own (gradient accumulation, equal to one larger
                batch). Such a measurement does not update.
            recorded: replay (:mod:`zolightning.trajectory`): the step's numbers as recorded, used instead of
                measuring (``objective`` is then ignored, and nothing crosses ranks). The weights still go through
                the same moves as in training where those round (an arithmetic restore), with a constant objective,
                so the update lands on bitwise the same θ; replay each accumulated micro-batch with
                ``accumulate=True`` and the same ``recorded`` first.
            defer_restore: with one direction and an arithmetic restore, leave θ at its last point
                (:attr:`Measurement.displaced`) for the update to bring back in its own noise pass (three passes of
                noise a step instead of four). Only for a caller that applies the measurement straight away, with
                nothing reading the weights in between.

        Whatever happens inside (an exception in a forward or in a collective, a non-finite loss), the weights are
        restored before this returns or raises: bitwise from a snapshot, or arithmetically within 2 ulp in fp32.
        """
        if self.running:
            raise RuntimeError(REENTRANT_STEP)
        target = self._target()
        index = self.steps if step is None else step
        cross = self._cross_rank(index, recorded)
        if accumulate and recorded is None:
            cross = cross.local()
        plan = self.plan(index)
        restore = restore_mode(self.config.restore, plan, self.structure.selection.prefers_snapshot, cross.parallel)
        session = self._prefix_session(plan) if recorded is None and objective is not None else None
        if recorded is not None:
            objective = self._walk(restore)
        elif session is not None:
            objective = session.wrap(objective)
        probe = Probe(objective, plan, restore)
        center = target.points.center
        self.running = True
        try:
            with drawing_noise():
                numbers, micro_batches = self._numbers(probe, cross, recorded, accumulate, center)
                estimates = self.estimator.combine(numbers, cross.seeds, center)
                updates = not accumulate and all(estimate.is_finite for estimate in estimates)
                candidates = self._candidates(probe, cross, estimates, numbers.shape[1], recorded, updates)
                fusable = defer_restore and updates and len(estimates) == 1 and not probe.exact
                displaced = probe.release() if fusable else None
        finally:
            self.running = False
            probe.restore()
            prefix = session.close() if session is not None else None
        self._accumulated_seconds += probe.forward_seconds
        forward = self._accumulated_seconds
        if not accumulate:
            self._accumulated_seconds = 0.0
        groups = target.optimizer.param_groups
        self.last = Measurement(
            step=index, seeds=tuple(cross.seeds), plan=plan, numbers=torch.cat([numbers, candidates], dim=1),
            estimates=estimates, candidate_losses=candidates, candidates=target.points.candidates,
            clip=self.config.clip, updates=updates, micro_batches=micro_batches, displaced=displaced,
            forward_seconds=forward if not accumulate else probe.forward_seconds, prefix=prefix,
            group_lr=tuple(float(group["lr"]) for group in groups),
            group_eps=tuple(group_eps(group, target) for group in groups),
        )
        if not accumulate:
            self.steps = index + 1
            self._observe(self.last)
        return self.last

    def _numbers(
        self, probe: Probe, cross: CrossRank, recorded: Recorded | None, accumulate: bool, center: bool
    ) -> tuple[Tensor, int]:
        """The estimator's (rows × k) numbers of the step and the micro-batches averaged into them (0 for one that
        only accumulates): measured, kept or averaged with the kept ones, then combined across ranks."""
        if recorded is None:
            measured = self.estimator.measure(probe, cross.local_seeds, center)
        else:  # the log's numbers count; what a replay's walk measures (zeros, where it walks at all) does not
            if probe.objective is not None:
                self.estimator.measure(probe, cross.local_seeds, center)
            measured = recorded.numbers[:, : self.estimator.width(center)]
        if accumulate:
            self.accumulated.append(measured)
            return measured, 0
        kept, self.accumulated = self.accumulated, []
        if kept and recorded is None:
            measured = torch.stack([*kept, measured]).mean(0)
        return cross.combine(measured), len(kept) + 1

    def _candidates(
        self, probe: Probe, cross: CrossRank, estimates: list[DirectionalEstimate], width: int,
        recorded: Recorded | None, updates: bool,
    ) -> Tensor:
        """L(θ + c·η·ĝ) for each candidate c the target declared, as (1 × candidates), on a step that updates (an
        empty (rows × 0) tensor otherwise)."""
        coefficients = self._target().points.candidates
        if not (coefficients and updates):
            return torch.zeros(len(estimates), 0)
        (estimate,) = estimates  # `attach` holds candidate-declaring updates to one direction
        rates = learning_rates(probe.plan, self._target())
        clip = self.config.clip
        steps = [rate * estimate.projected_gradient(entry.eps, clip) for entry, rate in zip(probe.plan, rates)]
        points = [Displacement(estimate.seed, tuple(c * s for s in steps)) for c in coefficients]
        # From θ, not from the last estimator point: a candidate is one add away from θ, and back, so the weights
        # come back from candidate moves (which can be far larger than εz) with no more rounding than from one point.
        probe.restore()
        if recorded is not None:
            for point in points if probe.objective is not None else ():
                probe.move_to(point)  # the walk, for the rounding of the moves
            return recorded.numbers[:, width:]
        return cross.combine(torch.stack([probe.loss_at_point(point) for point in points]).reshape(1, -1))

    def _observe(self, measurement: Measurement) -> None:
        self.nonfinite.observe(measurement.estimates)
        self.ties.observe(measurement.estimates, measurement.eps)
        if measurement.updates:
            rates = list(measurement.group_lr)
            self.divergence.observe(float(measurement.loss), rates)
            self.loss_rise.observe(float(measurement.loss), rates)

    # ------------------------------------------------------------------------------------------------ helpers

    def _target(self) -> UpdateTarget:
        if self.target is None:
            raise RuntimeError(
                "The engine has no update attached yet: `optimizer.use_engine(engine)` for a ZO optimizer, or "
                "`engine.attach(GradientUpdate(torch_optimizer).target())`."
            )
        return self.target

    def _cross_rank(self, step: int, recorded: Recorded | None) -> CrossRank:
        world = recorded.world_size if recorded is not None else collectives.world_size()
        parallel = self.config.query_parallel and world > 1
        rank = collectives.rank() if parallel and recorded is None else 0
        replaying = recorded is not None
        return CrossRank.of(lambda r: self.seeds(step, r), world, rank, self.config.query_parallel, replaying)

    def _walk(self, restore: Literal["arithmetic", "snapshot"]) -> LossFn | None:
        """A replay's objective: a constant where its moves round (an arithmetic restore: the probe walks as in
        training), else none at all (a snapshot restore is exact, so nothing needs walking)."""
        target = self._target()
        moves = bool(self.estimator.points(target.points.center)) or bool(target.points.candidates)
        return _constant_loss if restore == "arithmetic" and moves else None

    def _prefix_session(self, plan: PerturbationPlan) -> Any:
        """A prefix-reuse session for this step (``zo.prefix_reuse`` and a module to hook), else ``None``."""
        if not self.config.prefix_reuse or self.module is None:
            return None
        if self._prefix is None or self._prefix.module is not self.module:
            self._prefix = PrefixReuse(self.module)
        return self._prefix.session(plan, supported=self.estimator.reuses_prefix)

    # ------------------------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Counters, guards, the ε schedule, and the state of structure rules no callback owns (for ``fabric.save``
        and plain loops)."""
        return {
            "steps": self.steps,
            "nonfinite": self.nonfinite.state_dict(),
            "divergence": self.divergence.state_dict(),
            "ties": self.ties.state_dict(),
            "loss_rise": self.loss_rise.state_dict(),
            "eps_schedule": self.eps_schedule.state_dict(),
            "structure": self.structure.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))
        self.nonfinite.load_state_dict(state.get("nonfinite", {}))
        self.divergence.load_state_dict(state.get("divergence", {}))
        self.ties.load_state_dict(state.get("ties", {}))
        self.loss_rise.load_state_dict(state.get("loss_rise", {}))
        self.eps_schedule.load_state_dict(state.get("eps_schedule", {}))
        devices = {t.name: t.param.device for t in self.trainable()} if self.target is not None else None
        self.structure.load_state_dict(state.get("structure", {}), devices)
