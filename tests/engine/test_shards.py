"""ZO on sharded weights (FSDP2's ``fully_shard`` on two CPU ranks, gloo): each rank moves its own shard with the
whole tensor's z from the shard's offset, and the weights train bitwise as the same run on one process does."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.engine.noise_workers import set_noise_workers
from zolightning.engine.shards import with_local_shards
from zolightning.functional.directions import DenseDirection
from zolightning.functional.perturbation import ActiveTensor
from zolightning.optim import ZOSGD
from zolightning.structures import BlockSelection

STEPS = 5


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    # 7 and 5 rows: the shards of two ranks are uneven (4 + 3 rows, 3 + 2 rows), as torch.chunk splits them.
    return torch.nn.Sequential(torch.nn.Linear(9, 7), torch.nn.Tanh(), torch.nn.Linear(7, 5), torch.nn.Tanh(),
                               torch.nn.Linear(5, 1))


def batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(16, 9, generator=generator)
    return x, x.sum(dim=1, keepdim=True).tanh()


def train(net: torch.nn.Module, loss_fn, structure: str) -> None:
    optimizer = ZOSGD(net.named_parameters(), lr=0.05, eps=1e-3, weight_decay=0.01)
    optimizer.use_engine(StepEngine(ZOConfig(seed=3)))
    if structure == "bcd":
        optimizer.engine.install(BlockSelection("parameter"), module=net)
    for step in range(STEPS):
        optimizer.step(loss_fn, step=step)


def sharded_worker(rank: int, port: int, structure: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    set_noise_workers(1)  # no pool threads left alive when the spawned rank exits
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        net = model()
        mesh = init_device_mesh("cpu", (2,))
        for layer in net:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(net, mesh=mesh)
        x, y = batch(rank)
        train(net, lambda: torch.nn.functional.mse_loss(net(x), y), structure)
        weights = {name: p.full_tensor() for name, p in net.named_parameters()}
        if rank == 0:
            torch.save(weights, out)
        dist.barrier()  # neither rank tears the group down while the other still talks to it
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("structure", ["dense", "bcd"])
def test_two_sharded_ranks_train_bitwise_as_one_process(tmp_path: Path, structure: str):
    out = tmp_path / "sharded.pt"
    mp.spawn(sharded_worker, args=(free_port(), structure, str(out)), nprocs=2, join=True)
    sharded = torch.load(out)
    # One process, the whole tensors, the mean of the two ranks' losses: what the all-reduce averages.
    torch.set_num_threads(1)
    net = model()
    (x0, y0), (x1, y1) = batch(0), batch(1)
    mse = torch.nn.functional.mse_loss
    train(net, lambda: (mse(net(x0), y0) + mse(net(x1), y1)) / 2, structure)
    whole = dict(net.named_parameters())
    assert sharded.keys() == whole.keys()
    for name, value in sharded.items():
        assert torch.equal(value, whole[name].detach()), name
    assert not torch.equal(whole["0.weight"], model()[0].weight)  # training moved the weights


def test_an_unsharded_plan_is_left_as_it_is_and_torch_noise_is_refused_for_shards(monkeypatch):
    import zolightning.engine.shards as shards

    plan = [ActiveTensor("w", torch.zeros(3), 1, DenseDirection(), 1e-3)]
    assert with_local_shards(plan, "torch") is plan
    monkeypatch.setattr(shards, "is_sharded", lambda param: True)  # as if `w` were a DTensor
    with pytest.raises(ValueError, match="need `zo.noise: counter`"):
        with_local_shards(plan, "torch")
