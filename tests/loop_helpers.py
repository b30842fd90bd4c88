"""A model, data and training loops without the Trainer: Lightning Fabric and plain PyTorch (``torch.distributed``).

Module-level, so that spawned processes can import them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from zolightning.optim import ZOSGD

LR, EPS = 0.005, 1e-3


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def shard(step: int, batch: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank r's part of step ``step``'s global batch of ``world·batch`` rows (rows r, r + world, …): the ranks'
    parts together are exactly the one-process batch of ``world·batch`` rows."""
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(world * batch, 8, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    return x[rank::world], y[rank::world]


def zo_loop(model: Any, optimizer: Any, steps: range, batch: int, rank: int = 0, world: int = 1) -> list[float]:
    """The whole ZO training loop: one ``optimizer.step(closure)`` per batch."""
    losses = []
    for step in steps:
        x, y = shard(step, batch, rank, world)
        loss = optimizer.step(lambda: torch.nn.functional.mse_loss(model(x), y))
        losses.append(float(loss))
    return losses


def fabric_worker(fabric: Any, folder: str, steps: int, batch: int) -> None:
    model = make_model()
    model, optimizer = fabric.setup(model, ZOSGD(model.named_parameters(), lr=LR, eps=EPS))
    zo_loop(model, optimizer, range(steps), batch, fabric.global_rank, fabric.world_size)
    torch.save(weights(model), Path(folder) / f"rank{fabric.global_rank}.pt")


def plain_distributed_worker(rank: int, world: int, folder: str, steps: int, batch: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        model = make_model()
        optimizer = ZOSGD(model.named_parameters(), lr=LR, eps=EPS)
        zo_loop(model, optimizer, range(steps), batch, rank, world)
        torch.save(weights(model), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
