"""ZO under data parallelism: two CPU ranks (gloo) with ``ddp_spawn``, so that pytest is not re-launched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import trainer_kwargs
from zolightning import ZOLightningModule
from zolightning.callbacks import BlockRotation


class Regressor(ZOLightningModule):
    """Module-level, so that ``ddp_spawn`` can pickle it."""

    def __init__(self, **zo) -> None:
        super().__init__(zo=dict(lr=0.004, seed=3, **zo))
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)


class SaveWeights(Callback):
    """Each rank writes its final weights, to compare ranks with each other."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        weights = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        torch.save(weights, self.folder / f"rank{trainer.global_rank}.pt")


class Interleaved(LightningDataModule):
    """Rank r of w sees samples r, r + w, r + 2w, … in order: the ranks' batch k together are exactly batch k of a
    single process with w times the batch size."""

    def __init__(self, batch_size: int, shard: bool = True) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.shard = shard

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(96, 8, generator=generator)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.shard else (0, 1)
        shard = TensorDataset(x[rank::world], x.sum(dim=1, keepdim=True)[rank::world])
        return DataLoader(shard, batch_size=self.batch_size, shuffle=False)


def run(tmp_path: Path, devices: int, batch_size: int, callbacks=(), shard: bool = True, **zo) -> list[torch.Tensor]:
    folder = tmp_path / f"d{devices}-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    strategy = "ddp_spawn" if devices > 1 else "auto"
    trainer = Trainer(
        max_steps=6, strategy=strategy, use_distributed_sampler=False, callbacks=[*callbacks, SaveWeights(folder)],
        **trainer_kwargs(devices=devices),
    )
    trainer.fit(Regressor(**zo), datamodule=Interleaved(batch_size, shard))
    return [torch.load(folder / f"rank{r}.pt") for r in range(devices)]


@pytest.mark.parametrize("structured", [False, True], ids=["dense", "bcd"])
def test_two_ranks_stay_identical_and_match_one_rank_with_twice_the_batch(tmp_path, structured):
    def callbacks():
        return [BlockRotation(granularity="parameter", order="random-permutation")] if structured else []

    rank0, rank1 = run(tmp_path, devices=2, batch_size=8, callbacks=callbacks())
    assert torch.equal(rank0, rank1)  # the same seed and the same all-reduced losses on every rank
    (single,) = run(tmp_path, devices=1, batch_size=16, callbacks=callbacks())
    # Losses averaged over 2×8 or over 16 samples differ in the last fp32 bits, and (L+ − L−)/2ε multiplies that by
    # |L|/ε ≈ 5e3: agreement is to ~1e-5 in the weights, while training moved them by more than 1e-2.
    torch.testing.assert_close(rank0, single, rtol=1e-3, atol=1e-4)
    initial = torch.cat([p.detach().flatten() for p in Regressor().parameters()])
    assert float((single - initial).abs().max()) > 1e-2


def test_query_parallel_ranks_apply_every_ranks_direction_like_q_directions_on_one_rank(tmp_path):
    # Both ranks see the same batches, so two ranks with one direction each must equal one rank with q = 2.
    rank0, rank1 = run(tmp_path, devices=2, batch_size=8, shard=False, query_parallel=True)
    assert torch.equal(rank0, rank1)
    (single,) = run(tmp_path, devices=1, batch_size=8, num_directions=2, restore="snapshot")
    torch.testing.assert_close(rank0, single, rtol=1e-5, atol=1e-6)
    (one_direction,) = run(tmp_path, devices=1, batch_size=8)
    assert not torch.allclose(single, one_direction)
