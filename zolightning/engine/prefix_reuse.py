"""Prefix reuse: when a step perturbs only parameters that run after layer b of a layer stack, layers 0…b compute the
same activations at every evaluation of the step (same batch, same weights there, no randomness). So the first
evaluation runs the whole model and keeps the output of layer b, and every later evaluation of the step skips layers
0…b and starts from it. A step of a block-coordinate method then costs about k + E·(L − k) layers instead of E·L
(E evaluations, active block k of L).

It is generic: module hooks on the stacks that :func:`~zolightning.functional.layer_stacks.find_layer_stacks` finds
(any Hugging Face encoder, decoder or encoder-decoder, any ``nn.Sequential``-like stack), with no per-architecture
code. Every hook is registered on a module of the model being trained (its ``modules()``, the ones a data-parallel
wrapper's forward reaches too) and only for the one evaluation that records: no other model in the process sees a
hook, ever; an evaluation that reuses swaps the skipped layers' ``forward`` for the kept output on those layers'
instances, and puts it back in a ``finally``. During the first evaluation it checks, rather than assumes, what
exactness needs:

* the layers of each stack ran once each, in order (not: a forward that skips around, or an objective that runs the
  model twice);
* each layer's output went, as the same tensor, into the next module that ran (not: a residual added outside the
  layers, which would change what the next layer sees when earlier layers are skipped);
* no module that owns an active parameter was entered before layer b finished (the prefix really is unperturbed);
* the kept activation was not modified in place later in the forward.

Where a check fails, or it cannot apply (the embeddings are active; a dense, sparse or low-rank structure spans every
block; modules in train mode, where dropout would differ; an estimator without finite differences), the step runs
every evaluation in full, and the report says why. Memory: one kept activation per stack (the input of the first
layer that runs), held only until the step ends.

What is guaranteed: an evaluation that skips the prefix sees bitwise the tensors the prefix computed in the first
evaluation of the same step, so on a deterministic device its losses are bitwise those of a full forward. What is
assumed (and cannot be checked from outside): the objective is deterministic for a batch, and a skipped layer's
output is used only by the next module (a skipped layer returns the kept activation, so a model that also sums every
layer's output, say, would see it in place of each one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from zolightning.functional.layer_stacks import find_layer_stacks
from zolightning.functional.perturbation import PerturbationPlan

__all__ = ["PrefixReport", "PrefixReuse"]

log = logging.getLogger("zolightning")

LossFn = Callable[[], Tensor]


@dataclass(frozen=True)
class PrefixReport:
    """Which path a step's evaluations took.

    Attributes:
        reused_evaluations: evaluations that skipped the prefix (0 when every evaluation ran in full).
        skipped_layers: layers skipped in each such evaluation, summed over the stacks.
        reason: why the prefix was not reused ("" when it was).
    """

    reused_evaluations: int
    skipped_layers: int
    reason: str


class PrefixReuse:
    """Prefix reuse for one model (see the module docstring). :meth:`session` serves one step.

    Args:
        module: the model whose stacks are reused (under data parallelism, the module the wrapper holds: the hooks
            go on its own submodules).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.stacks = find_layer_stacks(module)
        self._told: set[str] = set()

    def session(self, plan: PerturbationPlan, supported: bool = True) -> _Session:
        """A session for one step whose active tensors are ``plan``'s; ``supported=False`` (an estimator without
        finite differences) runs everything in full."""
        return _Session(self, plan, supported)

    def tell(self, reason: str) -> None:
        """Log each distinct reason for running in full once."""
        if reason and reason not in self._told:
            self._told.add(reason)
            log.info("zolightning: prefix reuse off for this step (%s); the step runs every forward in full.", reason)


class _Session:
    def __init__(self, reuse: PrefixReuse, plan: PerturbationPlan, supported: bool) -> None:
        self.reuse = reuse
        self.reused = 0
        self.skipped = 0
        self.cached: dict[int, Any] = {}  # stack index → the output of its last prefix layer
        self.boundary: dict[int, int] = {}  # stack index → index of its last prefix layer
        self.versions: list[tuple[Tensor, int]] = []
        self.report: PrefixReport | None = None
        self.reason = self._precheck(plan, supported)
        self.mode = "off" if self.reason else "record"

    def _precheck(self, plan: PerturbationPlan, supported: bool) -> str:
        if not supported:
            return "the estimator does not evaluate by finite differences"
        if not self.reuse.stacks:
            return "the model has no repeated layer stack"
        if not plan:
            return "no active tensor"
        active = {id(entry.param) for entry in plan}
        self.owners = [
            module
            for module in self.reuse.module.modules()
            if any(id(p) in active for p in module.parameters(recurse=False))
        ]
        if not self.owners:
            return "the active tensors belong to no submodule"
        for stack in self.reuse.stacks:
            if any(sub.training for layer in stack.layers for sub in layer.modules()):
                return "the layer stack is in train mode (dropout would differ between evaluations)"
        return ""

    # ------------------------------------------------------------------------------------------------ evaluations

    def wrap(self, objective: LossFn) -> LossFn:
        def evaluate() -> Tensor:
            if self.mode == "record":
                return self._record(objective)
            if self.mode == "replay":
                return self._replay(objective)
            return objective()

        return evaluate

    def _record(self, objective: LossFn) -> Tensor:
        stacks = self.reuse.stacks
        entered = [False]
        next_index = [0] * len(stacks)
        in_order = [True] * len(stacks)
        chained = [True] * len(stacks)  # every layer's output so far went straight into the next module
        awaiting: list[tuple[int, Tensor | None] | None] = [None]  # (stack, output) whose consumer is next
        handles: list[Any] = []

        def owner_entered(*_: Any) -> None:
            entered[0] = True

        def any_module_starts(module: nn.Module, args: Any) -> None:
            # The first module of the model called after a stack layer returns must take that layer's output as its
            # input: otherwise (a residual added outside the layers, say) skipping the layers would change what it
            # sees. Registered on each of the model's modules (first, so it runs before their other hooks).
            if awaiting[0] is not None:
                s, output = awaiting[0]
                awaiting[0] = None
                given = next(iter(_tensors(args)), None)
                if output is None or given is not output:
                    chained[s] = False
                    if self.boundary.get(s) is not None and next_index[s] - 1 == self.boundary[s]:
                        del self.cached[s], self.boundary[s]

        def layer_starts(s: int, i: int) -> Callable[..., None]:
            def hook(*_: Any) -> None:
                if i != next_index[s]:
                    in_order[s] = False

            return hook

        def layer_ends(s: int, i: int) -> Callable[..., None]:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                next_index[s] = i + 1
                awaiting[0] = (s, next(iter(_tensors(output)), None))
                if not entered[0] and in_order[s] and chained[s]:
                    self.cached[s], self.boundary[s] = output, i

            return hook

        try:
            model = self.reuse.module
            handles.extend(module.register_forward_pre_hook(any_module_starts) for module in model.modules())
            for owner in self.owners:
                handles.append(owner.register_forward_pre_hook(owner_entered))
            for s, stack in enumerate(stacks):
                for i, layer in enumerate(stack.layers):
                    handles.append(layer.register_forward_pre_hook(layer_starts(s, i)))
                    handles.append(layer.register_forward_hook(layer_ends(s, i)))
            loss = objective()
        except BaseException:
            self._stop("")
            raise
        finally:
            for handle in handles:
                handle.remove()
        if awaiting[0] is not None:  # the last layer's output went to no module: cannot check where it went
            s = awaiting[0][0]
            if self.boundary.get(s) == len(stacks[s].layers) - 1:
                del self.cached[s], self.boundary[s]
            chained[s] = False
        self.versions = [(leaf, leaf._version) for value in self.cached.values() for leaf in _tensors(value)]
        if not entered[0]:
            self._stop("the active tensors were not used through their modules' forward")
        elif not all(in_order):
            self._stop("a stack's layers ran out of order or more than once (an objective that runs the model twice?)")
        elif not self.cached and not all(chained):
            self._stop("a layer's output does not go straight into the next module (a residual added outside the "
                       "layers?)")
        elif not self.cached:
            self._stop("the active tensors run before any layer of a stack finishes (the embeddings, the first "
                       "layer, or a structure spanning every block)")
        elif not self._intact():
            self._stop("a later layer modified the kept activation in place")
        else:
            self.mode = "replay"
        return loss

    def _replay(self, objective: LossFn) -> Tensor:
        patched: list[nn.Module] = []
        try:
            for s, boundary in self.boundary.items():
                output = self.cached[s]
                for layer in self.reuse.stacks[s].layers[: boundary + 1]:
                    layer.forward = _returning(output)  # an instance attribute shadows the class's forward
                    patched.append(layer)
            loss = objective()
        finally:
            for layer in patched:
                del layer.forward
        self.reused += 1
        self.skipped = sum(boundary + 1 for boundary in self.boundary.values())
        if not self._intact():
            self._stop("a later layer modified the kept activation in place")
        return loss

    def _intact(self) -> bool:
        return all(leaf._version == version for leaf, version in self.versions)

    def _stop(self, reason: str) -> None:
        self.mode, self.reason = "off", self.reason or reason
        self.cached, self.versions = {}, []
        self.reuse.tell(reason)

    def close(self) -> PrefixReport:
        """End the step: drop the kept activations; the report. Closing again returns the same report."""
        if self.report is not None:
            return self.report
        if self.mode == "off" and self.reason and not self.reused:
            self.reuse.tell(self.reason)
        self.cached, self.versions, self.mode = {}, [], "off"
        reason = "" if self.reused else (self.reason or "the step had a single evaluation")
        self.report = PrefixReport(self.reused, self.skipped if self.reused else 0, reason)
        return self.report


def _returning(output: Any) -> Callable[..., Any]:
    def skipped_layer(*_: Any, **__: Any) -> Any:
        return output

    return skipped_layer


def _tensors(value: Any) -> list[Tensor]:
    return [leaf for leaf in tree_leaves(value) if isinstance(leaf, Tensor)]

