"""Is the finder's applied lr safe on models it was not tuned on? Three models written the way a user writes them:

- ``digits_mlp``: a tutorial-style LightningModule, an MLP on a digits-shaped 10-class problem, with ``ZOSGD``;
- ``boring``: Lightning's own ``BoringModel`` (``lightning.pytorch.demos``), switched with ``as_zo`` and given
  ``ZOSGD`` (its own ``configure_optimizers`` is plain SGD at lr 0.1, which a ZO estimate would blow up);
- ``bert``: a tutorial-style module around ``transformers``' ``BertForSequenceClassification`` (a small config, random
  init), on the same rows as token ids, with ``ZOSGD``.

For each: a fit with ``ZOLearningRateFinder(apply=True)``, then the training loss over ``--steps`` steps at the
applied lr (the defaults: a quarter of the proposal, confirmed by 50 real steps), against the same run at the
one-step proposal applied unchecked (``margin=1, confirm_steps=0``). A safe finder
ends below where it started and raises no divergence stop.

    python -m benchmarks.finder_outside_models --steps 1000 --out benchmarks/results/finder/outside_models.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from zolightning import ZOLightningModule, as_zo
from zolightning.callbacks import ZOLearningRateFinder
from zolightning.optim import ZOSGD


def digits_loader(batch_size: int = 32, tokens: bool = False) -> DataLoader:
    """A 10-class problem shaped like scikit-learn's digits (1797 rows of 64 values in 0..16; generated here, since
    scikit-learn is not a dependency): each class has its own mean pattern, each row adds noise."""
    generator = torch.Generator().manual_seed(0)
    means = torch.rand(10, 64, generator=generator) * 16
    labels = torch.randint(0, 10, (1797,), generator=generator)
    rows = (means[labels] + 4 * torch.randn(1797, 64, generator=generator)).clamp(0, 16).round()
    features = rows.long() + 1 if tokens else rows / 16.0  # tokens: intensities 0..16 as ids 1..17
    data = TensorDataset(features, labels)
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))


class DigitsMLP(ZOLightningModule):
    def __init__(self, hidden: int = 64, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return ZOSGD(self.named_parameters(), lr=self.hparams.lr, eps=1e-3)


class BertDigits(ZOLightningModule):
    def __init__(self, lr: float = 1e-4) -> None:
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(vocab_size=18, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=64, num_labels=10)
        self.model = BertForSequenceClassification(config)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        ids, labels = batch
        return self.model(input_ids=ids, labels=labels).loss

    def configure_optimizers(self):
        return ZOSGD(self.named_parameters(), lr=self.lr, eps=1e-3)


class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))


def build(name: str) -> tuple[pl.LightningModule, DataLoader]:
    torch.manual_seed(0)
    if name == "digits_mlp":
        return DigitsMLP(), digits_loader()
    if name == "bert":
        return BertDigits(), digits_loader(tokens=True)
    from lightning.pytorch.demos.boring_classes import BoringModel

    model = as_zo(BoringModel(), seed=0)
    model.configure_optimizers = lambda: ZOSGD(model.named_parameters(), lr=1e-3, eps=1e-3)  # type: ignore[method-assign]
    return model, DataLoader(TensorDataset(torch.randn(640, 32, generator=torch.Generator().manual_seed(0))),
                             batch_size=2)


def run(name: str, steps: int, confirm_steps: int, margin: float) -> dict:
    model, loader = build(name)
    if name == "boring":  # BoringModel's training_step takes the bare tensor batch
        loader = DataLoader([t[0] for t in loader.dataset], batch_size=2)
    finder, losses = ZOLearningRateFinder(trials=4, apply=True, confirm_steps=confirm_steps, margin=margin), LossRecorder()
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[finder, losses])
    started, error = time.time(), None
    try:
        trainer.fit(model, loader)
    except FloatingPointError as caught:  # the divergence stop
        error = str(caught).splitlines()[0]
    applied = float(model.zo_engine.target.optimizer.param_groups[0]["lr"])
    window = max(1, min(50, len(losses.losses) // 5))  # means over the first and last 50 steps
    first = sum(losses.losses[:window]) / window if losses.losses else float("nan")
    last = sum(losses.losses[-window:]) / window if losses.losses else float("nan")
    return {
        "model": name, "confirm_steps": confirm_steps, "margin": margin, "proposal": finder.result.lr if finder.result else None,
        "applied_lr": applied, "confirmation": finder.confirmation.summary() if finder.confirmation else None,
        "steps_run": len(losses.losses), "loss_first": first, "loss_last": last, "diverged": error,
        "seconds": round(time.time() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--models", nargs="+", default=["digits_mlp", "boring", "bert"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.models:
        for confirm, margin in ((50, 0.25), (0, 1.0)):
            row = run(name, args.steps, confirm, margin)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
