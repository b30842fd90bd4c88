"""The perturbation plan of one step, and the in-place moves along it.

A plan is the list of tensors a step perturbs and updates, each with the direction that forms its z, its
perturbation scale ε and its learning-rate scale. Tensors that are not in the plan are never read or written: no noise
is drawn for them and no add touches them, so the cost of a step scales with the plan's size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from zolightning.functional.directions import TensorDirection
from zolightning.functional.noise import NoiseSource, tensor_seed


@dataclass(frozen=True, eq=False)
class ActiveTensor:
    """One tensor of a step's plan.

    Attributes:
        name: the parameter's qualified name (as in ``named_parameters()``), used in logs and checkpoints.
        param: the parameter itself; perturbed and updated in place.
        key: the tensor's noise key (:func:`~zolightning.functional.noise.stable_key` of its name by default).
        direction: how z is formed on this tensor.
        eps: perturbation scale ε for this tensor (units of the parameter).
        lr_scale: multiplier on the learning rate for this tensor's update (1.0 by default).
        noise: where z's random numbers come from (``zo.noise``, set by the engine's plan; ``counter`` by default, as
            ``zo.noise``).
        shard: this rank's local part of a sharded parameter (a view of its storage: FSDP2's ``to_local()``), which
            the moves and the update write; ``None`` for a whole parameter.
        offset: the index, in the whole parameter's row-major order, of the shard's first element (0 unsharded): its
            z is the whole tensor's z from there on, so every split of the tensor moves as the whole.
    """

    name: str
    param: Tensor
    key: int
    direction: TensorDirection
    eps: float
    lr_scale: float = 1.0
    noise: NoiseSource = "counter"
    shard: Tensor | None = None
    offset: int = 0

    @property
    def data(self) -> Tensor:
        """What this rank moves and updates: the local shard of a sharded parameter, else the parameter itself."""
        return self.param if self.shard is None else self.shard

    def direction_at(self, seed: int) -> Tensor:
        """z of this tensor (of its shard) for the step seed ``seed``: fp32, :attr:`data`'s shape."""
        if self.shard is not None:
            return self.direction.sample_slice(self.shard, tensor_seed(seed, self.key), self.noise, self.offset)
        return self.direction.sample(self.param, tensor_seed(seed, self.key), self.noise)

    @property
    def fused(self) -> bool:
        """Whether moves along this tensor's z are fused passes that never draw z into a buffer (dense counter
        noise): every move of it must then go through :meth:`add_along_`, so that a move and its undo round alike."""
        return self.direction.fuses(self.data, self.noise)

    def add_along_(self, seed: int, coefficient: float, z: Tensor | None = None) -> None:
        """θ ← θ + coefficient·z in place, z this tensor's direction for the step seed ``seed``: one fused pass where
        :attr:`fused` (``z`` is then not read), else ``z`` if given (it must be :meth:`direction_at` of ``seed``)
        or a freshly drawn one."""
        if z is None or self.fused:
            self.direction.add_to_(self.data, tensor_seed(seed, self.key), coefficient, self.noise, self.offset)
        else:
            self.data.add_(z.to(self.data.dtype), alpha=coefficient)


PerturbationPlan = Sequence[ActiveTensor]


@dataclass(frozen=True)
class Displacement:
    """Where a plan's tensors stand away from θ: θᵢ + cᵢ·zᵢ, with z drawn from ``seed`` and one coefficient cᵢ per
    tensor of the plan, in plan order (units of z: an evaluation at offset k along εz has cᵢ = k·εᵢ).

    A measurement that leaves its last move for the update's noise pass to undo carries one (θ is back only once the
    update has run): the update subtracts cᵢ·zᵢ with the zᵢ it draws anyway.
    """

    seed: int
    coefficients: tuple[float, ...]

    @classmethod
    def along(cls, plan: PerturbationPlan, seed: int, offset: float) -> Displacement:
        """θ + offset·εz for every tensor of ``plan`` (each with its own ε)."""
        return cls(seed, tuple(offset * entry.eps for entry in plan))


def iter_directions(plan: PerturbationPlan, seed: int) -> Iterator[tuple[ActiveTensor, Tensor]]:
    """Yield each entry with its z at ``seed``, generating one tensor's noise at a time (never the whole plan's)."""
    for entry in plan:
        yield entry, entry.direction_at(seed)


@torch.no_grad()
def move_(plan: PerturbationPlan, seed: int, coefficients: Sequence[float]) -> None:
    """θᵢ ← θᵢ + cᵢ·zᵢ for every tensor of the plan, in place, with one coefficient per tensor (units of z).

    The autocast cache is cleared afterwards: autocast keys its cached low-precision copies of weights by tensor,
    not by version, so without this the next forward could run on the weights as they were before the move.
    """
    for entry, coefficient in zip(plan, coefficients, strict=True):
        entry.add_along_(seed, coefficient)
    torch.clear_autocast_cache()


def perturb_(plan: PerturbationPlan, seed: int, scale: float) -> None:
    """θᵢ ← θᵢ + scale·εᵢ·zᵢ for every tensor of the plan, in place (see :func:`move_`)."""
    move_(plan, seed, [scale * entry.eps for entry in plan])


def snapshot(plan: PerturbationPlan) -> list[Tensor]:
    """Copies of the plan's tensors, for an exact restore in any dtype (costs the plan's size in memory)."""
    return [entry.data.detach().clone() for entry in plan]


@torch.no_grad()
def restore_(plan: PerturbationPlan, saved: Sequence[Tensor]) -> None:
    """Copy a :func:`snapshot` back into the plan's tensors and clear the autocast cache."""
    for entry, value in zip(plan, saved, strict=True):
        entry.data.copy_(value)
    torch.clear_autocast_cache()
