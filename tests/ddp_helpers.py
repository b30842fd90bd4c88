"""Models, data and callbacks shared by the data-parallel tests (``ddp_spawn`` in-process, ``ddp`` via a script).

Everything here is module-level so that ``ddp_spawn`` can pickle it and ``tests/ddp_script.py`` can import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import trainer_kwargs
from zolightning import ZOLightningModule
from zolightning.callbacks import BlockRotation, LowRankRefresh, SparsityMask, StructureCallback
from zolightning.optim import create_optimizer
from zolightning.structures import LayerSubset

# A rank that waits on a collective the others never join fails after this long instead of hanging the test run.
COLLECTIVE_TIMEOUT = timedelta(seconds=60)
MAX_STEPS = 6


# Test names for registered optimizers with options beyond the registry's defaults.
NAMED_OPTIONS = {"zo-sgd-sign-elementwise": ("zo-sgd-sign", {"elementwise": True})}


class Regressor(ZOLightningModule):
    """A small MLP regressor.

    Args:
        optimizer: ``None`` (the module's default ZOSGD), ``"sgd"`` (torch SGD with momentum) or ``"adam"`` (the plain
            ``torch.optim`` path, fed by writing g·z into ``.grad``), or a name from ``zolightning.optim.OPTIMIZERS``.
        nan_at: ``(rank, step)``: that rank alone returns a NaN loss at that global step.
        stacked: a repeated stack of three layers between input and output (where prefix reuse applies).
        **zo: ZO options on top of ``seed=3`` (and ``lr=0.004`` for the default optimizer).
    """

    def __init__(
        self, optimizer: str | None = None, nan_at: tuple[int, int] | None = None, stacked: bool = False, **zo: Any
    ) -> None:
        # zo.lr is the default optimizer's; any other optimizer has its own.
        super().__init__(zo=dict(seed=3, **({"lr": 0.004} if optimizer is None else {}), **zo))
        self.optimizer_name = optimizer
        self.nan_at = nan_at
        torch.manual_seed(0)
        if stacked:
            layers = (torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh()) for _ in range(3))
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Sequential(*layers), torch.nn.Linear(16, 1))
        else:
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def configure_optimizers(self) -> Any:
        if self.optimizer_name is None:
            return super().configure_optimizers()
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(self.parameters(), lr=0.004, momentum=0.5)
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.parameters(), lr=0.01)
        name, options = NAMED_OPTIONS.get(self.optimizer_name, (self.optimizer_name, {}))
        return create_optimizer(name, self.named_parameters(), lr=0.01, **options)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        if self.nan_at is not None and (self.trainer.global_rank, self.trainer.global_step) == tuple(self.nan_at):
            loss = loss * float("nan")
        return loss


class ShardedRegressor(Regressor):
    """``Regressor`` with each linear layer and the whole net sharded by FSDP2 over the data-parallel mesh of
    Lightning's ``ModelParallelStrategy`` (``tests/sharded_script.py``)."""

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)


def flat_weights(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


# The collectives of torch.distributed a training step could use (Lightning calls them through the module attribute).
COLLECTIVES = (
    "all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast", "broadcast_object_list",
    "reduce", "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "scatter", "gather",
    "send", "recv", "isend", "irecv", "barrier",
)


def _largest_tensor(values: Any) -> int:
    sizes = [0]
    for value in values:
        if isinstance(value, torch.Tensor):
            sizes.append(value.numel())
        elif isinstance(value, (list, tuple)):
            sizes.append(_largest_tensor(value))
    return max(sizes)


class Record(Callback):
    """Each rank writes its final weights, how far each step moved them (max |Δθ|), the collectives each step made
    (``(name, numel of the largest tensor passed)``), its non-finite count and global step."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.moved: list[float] = []
        self.prefix_reused: list[int] = []
        self.collectives: list[list[tuple[str, int]]] = []
        self._before: torch.Tensor | None = None
        self._originals: dict[str, Callable[..., Any]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._before = flat_weights(pl_module)
        self.collectives.append([])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            calls = self.collectives[-1]
            for name in COLLECTIVES:
                original = getattr(torch.distributed, name, None)
                if original is None:
                    continue
                self._originals[name] = original

                def counted(*args, _name=name, _original=original, **kwargs):
                    calls.append((_name, _largest_tensor([*args, *kwargs.values()])))
                    return _original(*args, **kwargs)

                setattr(torch.distributed, name, counted)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for name, original in self._originals.items():
            setattr(torch.distributed, name, original)
        self._originals = {}
        self.moved.append(float((flat_weights(pl_module) - self._before).abs().max()))
        last = pl_module.zo_engine.last
        self.prefix_reused.append(last.prefix.reused_evaluations if last is not None and last.prefix else 0)

    def on_train_end(self, trainer, pl_module):
        record = {
            "weights": flat_weights(pl_module),
            "moved": self.moved,
            "prefix_reused": self.prefix_reused,
            "collectives": self.collectives,
            "nonfinite_steps": pl_module.zo_nonfinite_steps,
            "global_step": trainer.global_step,
        }
        torch.save(record, self.folder / f"rank{trainer.global_rank}.pt")


class Interleaved(LightningDataModule):
    """Rank r of w sees samples r, r + w, r + 2w, … in order: the ranks' batch k together are exactly batch k of a
    single process with w times the batch size. With ``shard=False`` every rank sees the whole data set."""

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


# Every perturbation structure, as a factory of fresh callbacks. The sparse mask uses the weight-dependent criterion on
# purpose: ranks can only agree on it if their weights are identical; the refresh interval of 3 puts a factor refresh
# inside a 6-step run.
STRUCTURES: dict[str, Callable[[], list[Callback]]] = {
    "dense": lambda: [],
    "bcd": lambda: [BlockRotation(granularity="parameter", order="random-permutation")],
    "sparse": lambda: [SparsityMask(sparsity=0.5, criterion="small-magnitude")],
    "lozo": lambda: [LowRankRefresh(rank=2, refresh_interval=3, mode="lozo")],
    "subzero": lambda: [LowRankRefresh(rank=2, refresh_interval=3, mode="subzero")],
    "bcd+sparse": lambda: [BlockRotation(granularity="parameter"), SparsityMask(sparsity=0.5, criterion="random")],
    "lezo": lambda: [StructureCallback(LayerSubset(active_layers=2, granularity="parameter"))],
    "bcd-layer": lambda: [BlockRotation(granularity="layer", order="cyclic")],
}


def fit(folder: Path, devices: int, batch_size: int, structure: str = "dense", strategy: Any = None,
        shard: bool = True, optimizer: str | None = None, nan_at: tuple[int, int] | None = None, read: bool = True,
        stacked: bool = False, steps: int = MAX_STEPS, callbacks: Sequence[Callback] = (),
        **zo: Any) -> list[dict[str, Any]]:
    """Train ``Regressor`` for ``steps`` steps (default ``MAX_STEPS``) and return every rank's record (read from ``folder``; with
    ``read=False``, as under ``strategy="ddp"`` where another rank may still be writing, nothing is read)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if strategy is None:
        strategy = DDPStrategy(start_method="spawn", timeout=COLLECTIVE_TIMEOUT) if devices > 1 else "auto"
    trainer = Trainer(
        max_steps=steps, strategy=strategy, use_distributed_sampler=False,
        callbacks=[*callbacks, *STRUCTURES[structure](), Record(folder)], **trainer_kwargs(devices=devices),
    )
    trainer.fit(Regressor(optimizer=optimizer, nan_at=nan_at, stacked=stacked, **zo),
                datamodule=Interleaved(batch_size, shard))
    if not read:
        return []
    return [torch.load(folder / f"rank{r}.pt") for r in range(devices)]
