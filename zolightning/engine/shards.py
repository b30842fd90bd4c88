"""Sharded parameters (FSDP2's ``fully_shard``, DTensors sharded on their first dimension): each rank perturbs and
updates its own shard in place, with the z of the whole tensor from the shard's first element on.

Counter noise makes this exact: element i of a tensor's z is a function of (seed, i) alone, so a shard of rows
r0 … r1 − 1 is moved by elements r0·row … r1·row − 1 of the whole tensor's z, and every split of the weights trains
bitwise as the whole does. FSDP2 all-gathers the shards at each forward, so the forwards see the perturbed weights;
the losses are averaged over ranks as under DDP (:mod:`zolightning.engine.cross_rank`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch.distributed.tensor import DTensor, Shard

from zolightning.functional.noise import NoiseSource
from zolightning.functional.perturbation import ActiveTensor, PerturbationPlan


def is_sharded(param: torch.Tensor) -> bool:
    """Whether ``param`` is a DTensor (a parameter of a ``fully_shard``-ed module, say)."""
    return isinstance(param, DTensor)


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor: a DTensor's local shard, else the tensor itself."""
    return tensor.to_local() if is_sharded(tensor) else tensor


def with_local_shards(plan: PerturbationPlan, noise: NoiseSource) -> PerturbationPlan:
    """``plan`` with each sharded parameter's local shard and its offset in the whole (see the module docstring).

    Raises:
        ValueError: a DTensor not sharded on dim 0 of a one-dimensional mesh, or ``noise`` other than ``counter``
            (torch noise is drawn per chunk of the whole tensor, so a shard cannot regenerate its part).
    """
    if not any(is_sharded(entry.param) for entry in plan):
        return plan
    if noise != "counter":
        raise ValueError(
            "Sharded weights (FSDP2 `fully_shard`) need `zo.noise: counter`: each rank regenerates its shard's part "
            "of z from the element indices, which torch noise (drawn per chunk of the whole tensor) cannot do. "
            "Remove `zo.noise: torch`."
        )
    return [_local_shard(entry) if is_sharded(entry.param) else entry for entry in plan]


def _local_shard(entry: ActiveTensor) -> ActiveTensor:
    param = entry.param
    placements = tuple(param.placements)
    if len(placements) != 1 or not (isinstance(placements[0], Shard) and placements[0].dim == 0):
        raise ValueError(
            f"{entry.name} is a DTensor placed as {placements}: ZO moves shards of the first dimension on a "
            "one-dimensional mesh (FSDP2's default, `fully_shard(module, mesh=init_device_mesh(..., (world,)))`)."
        )
    with torch.no_grad():  # a view of the shard's storage, written in place (outside autograd: no view+inplace error)
        local = param.to_local()
    if not local.is_contiguous():
        raise ValueError(f"The local shard of {entry.name} is not contiguous; ZO moves it in row-major order.")
    rows = math.ceil(param.shape[0] / param.device_mesh.size()) if param.dim() else 0
    # torch.chunk's split, as Shard(0) places rows: rank k holds rows k·⌈n/w⌉ … min(n, (k+1)·⌈n/w⌉) − 1.
    first_row = min(param.shape[0], param.device_mesh.get_local_rank() * rows) if param.dim() else 0
    return replace(entry, shard=local, offset=first_row * math.prod(param.shape[1:]))
