"""Train with Lightning Fabric's ``ModelParallelStrategy`` (FSDP2 ``fully_shard`` in the parallelize function) on two
CPU processes (gloo) and write each rank's whole weights as ``OUTPUT/rank<r>.pt``.

Usage: ``python tests/sharded_fabric_script.py OUTPUT``. Fabric runs this script again for rank 1, so it cannot run
inside pytest; ``tests/test_module_sharded.py`` runs it as a subprocess.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STEPS = 5


def network():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def data(rank: int, world: int):
    import torch

    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    return x[rank::world], x.sum(dim=1, keepdim=True)[rank::world]


def main(output: Path) -> None:
    import torch
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import ModelParallelStrategy
    from torch.distributed.fsdp import fully_shard

    from zolightning.optim import ZOSGD

    def parallelize(model: torch.nn.Module, mesh) -> torch.nn.Module:
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh["data_parallel"])
        fully_shard(model, mesh=mesh["data_parallel"])
        return model

    strategy = ModelParallelStrategy(parallelize, data_parallel_size=2, tensor_parallel_size=1)
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
    fabric.launch()
    torch.set_num_threads(1)
    model = fabric.setup_module(network())
    optimizer = fabric.setup_optimizers(ZOSGD(model.named_parameters(), lr=0.01, eps=1e-3))
    x, y = data(fabric.global_rank, 2)
    for step in range(STEPS):
        optimizer.step(lambda: torch.nn.functional.mse_loss(model(x), y))
    whole = torch.cat([p.full_tensor().detach().flatten() for p in model.parameters()])
    output.mkdir(parents=True, exist_ok=True)
    torch.save({"weights": whole, "sharded": all(type(p).__name__ == "DTensor" for p in model.parameters())},
               output / f"rank{fabric.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
