"""ZOProgressBar: one bar for the run, counting steps against max_steps, with the ZO figures."""

from __future__ import annotations

from lightning.pytorch import Trainer

from tests.conftest import trainer_kwargs
from tests.test_module import ZORegressor, regression_data
from zolightning.callbacks import ZOProgressBar


def test_the_bar_counts_steps_against_max_steps_across_epochs_and_shows_the_zo_figures():
    bar = ZOProgressBar()
    model = ZORegressor(zo=dict(lr=0.004))
    trainer = Trainer(max_steps=12, callbacks=[bar], **trainer_kwargs(enable_progress_bar=True))
    trainer.fit(model, regression_data(n=64))  # 2 batches an epoch: 6 epochs
    train_bar = bar.train_progress_bar
    assert train_bar.total == 12 and train_bar.n == 12 and train_bar.desc.startswith("step")
    shown = bar.get_metrics(trainer, model)
    assert {"loss", "g", "lr"} <= set(shown) and not any(key.startswith("train/") for key in shown)
