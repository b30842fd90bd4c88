"""``Settlement``: an update brings back, tensor by tensor, the displacement a measurement left for it.

A measurement taken with ``defer_restore=True`` leaves θ at its last point (:attr:`Measurement.displaced
<zolightning.engine.measurement.Measurement.displaced>`), so that the update's noise pass, which draws each tensor's z
anyway, subtracts that point's c·z before moving the tensor: three passes of noise a step instead of four. The
adds are the very ones a separate restore would make (same z, same coefficient), so the weights come out bitwise
the same either way. Whatever the update does, :meth:`Settlement.finish` (in its ``finally``) brings back every tensor
it did not reach.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zolightning.functional.perturbation import Displacement, PerturbationPlan, move_


class Settlement:
    """The tensors of ``plan`` still displaced by ``displaced`` (``None``: none), settled one at a time.

    Args:
        plan: the measurement's plan.
        displaced: where the measurement left θ (its coefficients are in plan order).
    """

    def __init__(self, plan: PerturbationPlan, displaced: Displacement | None) -> None:
        self.plan = plan
        self.displaced = displaced
        self.pending = set(range(len(plan))) if displaced is not None else set()

    def settle(self, index: int, z: Tensor, seed: int) -> None:
        """Bring tensor ``index`` of the plan back to θ with its z for ``seed`` (drawn by the caller); nothing if it
        is not displaced along ``seed``, or already back."""
        if self.displaced is None or seed != self.displaced.seed or index not in self.pending:
            return
        with torch.no_grad():
            # A fused tensor regenerates z in the pass (as its moves did), so the undo rounds as the move did.
            self.plan[index].add_along_(seed, -self.displaced.coefficients[index], z)
        self.pending.discard(index)

    def owed(self, index: int, seed: int) -> float:
        """The coefficient, in units of z, that brings tensor ``index`` back to θ along ``seed`` (0.0 if it is not
        displaced along ``seed``, or already back), for an update that folds the restore into its own pass
        (:func:`~zolightning.functional.counter_noise.counter_sgd_update_`'s ``restore``); that update calls
        :meth:`paid` once its pass has run, so that a pass that raised leaves the tensor to :meth:`finish`."""
        if self.displaced is None or seed != self.displaced.seed or index not in self.pending:
            return 0.0
        return -self.displaced.coefficients[index]

    def paid(self, index: int) -> None:
        """Tensor ``index`` is back at θ (its update's pass folded the restore in)."""
        self.pending.discard(index)

    def finish(self) -> None:
        """Bring back every tensor still displaced (drawing its z) and clear the autocast cache."""
        if self.displaced is not None and self.pending:
            rest = sorted(self.pending)
            move_([self.plan[i] for i in rest], self.displaced.seed, [-self.displaced.coefficients[i] for i in rest])
        self.pending = set()
        torch.clear_autocast_cache()
