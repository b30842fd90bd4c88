"""A small layered ZO model and a fit/resume harness shared by the structure-callback tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import trainer_kwargs
from zolightning import ZOLightningModule
from zolightning.optim import ZOSGD


class LayeredModel(ZOLightningModule):
    """stem → 3 identical layers (a ModuleList) → head: 5 blocks at ``layer`` granularity."""

    def __init__(self, lr: float = 0.01, seed: int = 0, **zo) -> None:
        super().__init__(zo=dict(seed=seed, **zo))
        self.lr = lr
        torch.manual_seed(0)
        self.stem = torch.nn.Linear(6, 8)
        self.layers = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.LayerNorm(8)) for _ in range(3)
        )
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = x + layer(x)
        return self.head(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return ZOSGD(self.named_parameters(), lr=self.lr, eps=1e-3)


def loader(batches: int = 3) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8 * batches, 6, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8, shuffle=False)


class StepRecorder(Callback):
    """Records which parameters each step changed and the logged active block."""

    def __init__(self) -> None:
        self.changed: list[set[str]] = []
        self.blocks: list[float] = []
        self._before: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._before = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.changed.append({n for n, p in pl_module.named_parameters() if not torch.equal(p, self._before[n])})
        if "train/active_block" in trainer.callback_metrics:
            self.blocks.append(float(trainer.callback_metrics["train/active_block"]))


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def fit(callbacks: list[Callback], steps: int, root: Path | None = None, ckpt_path: str | None = None,
        model_factory: Callable[[], ZOLightningModule] = LayeredModel) -> tuple[ZOLightningModule, Trainer]:
    """Fit for ``steps`` steps (3 batches an epoch, no shuffling); with ``root``, checkpoint every 3 steps there."""
    model = model_factory()
    extra = {}
    if root is not None:
        callbacks = [*callbacks, ModelCheckpoint(dirpath=root, every_n_train_steps=3, save_top_k=-1)]
        extra["enable_checkpointing"] = True
    trainer = Trainer(max_steps=steps, callbacks=callbacks, **trainer_kwargs(**extra))
    trainer.fit(model, loader(), ckpt_path=ckpt_path)
    return model, trainer


def assert_resume_is_exact(
    make_callbacks: Callable[[], list[Callback]],
    tmp_path: Path,
    steps: int = 9,
    model_factory: Callable[[], ZOLightningModule] = LayeredModel,
) -> None:
    """A run interrupted at step 3 and resumed from its checkpoint ends bitwise equal to an uninterrupted run."""
    uninterrupted, _ = fit(make_callbacks(), steps, model_factory=model_factory)
    fit(make_callbacks(), 3, root=tmp_path, model_factory=model_factory)
    checkpoint = tmp_path / "epoch=0-step=3.ckpt"
    torch.load(checkpoint, weights_only=True)  # everything saved loads under weights_only
    resumed, trainer = fit(make_callbacks(), steps, ckpt_path=str(checkpoint), model_factory=model_factory)
    assert trainer.global_step == steps
    assert torch.equal(weights(resumed), weights(uninterrupted))
