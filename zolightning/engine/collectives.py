"""The few numbers a ZO step sends between data-parallel processes, over ``torch.distributed`` directly.

A step's only communication is a handful of losses: averaged over ranks (every rank then applies the same update),
or gathered (query parallelism: each rank's own directions, applied by every rank). No seeds, weights or gradients
travel. One collective per step and no barrier: Lightning's ``strategy.reduce`` adds a barrier before each
all-reduce, a second round trip every step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """The default process group's size, or 1 when ``torch.distributed`` is not initialized."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 when not initialized)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _device() -> torch.device:
    # NCCL moves only CUDA tensors; every other backend takes CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_ranks(values: Tensor) -> Tensor:
    """The element-wise mean of ``values`` over all ranks (one all-reduce), as fp32 on the CPU."""
    values = values.detach().to(_device(), torch.float32).clone()
    dist.all_reduce(values)
    return values.div_(dist.get_world_size()).cpu()


def gather_over_ranks(values: Tensor) -> Tensor:
    """Every rank's ``values`` stacked in rank order, shape (world, *values.shape), fp32 on the CPU (one all-gather)."""
    local = values.detach().to(_device(), torch.float32).contiguous()
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    return torch.stack(gathered).cpu()


def sum_over_ranks(values: Tensor) -> Tensor:
    """The element-wise sum of ``values`` over all ranks (one all-reduce), in ``values``' dtype on the CPU: the
    diagnostics' partial sums over each rank's shards (fp64 Gram matrices and norms)."""
    values = values.detach().to(_device()).clone()
    dist.all_reduce(values)
    return values.cpu()


def averaged_over_ranks(objective: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """``objective`` returning the mean of every rank's loss (one all-reduce per call, in the loss's dtype), for a
    search every rank runs in lock-step on sharded weights: each then sees the same numbers and takes the same path.
    Every rank must call it together."""

    def evaluate() -> Tensor:
        loss = objective()
        return mean_over_ranks(loss).to(loss.dtype).reshape(loss.shape)

    return evaluate
