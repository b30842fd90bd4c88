"""ZODiagnostics: what it writes to TensorBoard, and that it costs nothing on steps when it is not due."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from tests.callbacks.structure_helpers import LayeredModel, loader
from tests.conftest import count_noise_passes, trainer_kwargs
from zolightning.callbacks import BlockRotation, ZODiagnostics


class ValidatedModel(LayeredModel):
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self(x), y))


def events(logger: TensorBoardLogger) -> EventAccumulator:
    accumulator = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "histograms": 0, "scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_scalars_images_histograms_and_hparams_are_written_and_read_back(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="run")
    diagnostics = ZODiagnostics(every_n_steps=3, extra_directions=2)
    trainer = Trainer(**trainer_kwargs(max_steps=6, logger=logger, callbacks=[BlockRotation(), diagnostics]))
    trainer.fit(ValidatedModel(), loader(3), loader(1))

    accumulator = events(logger)
    tags = accumulator.Tags()
    for name in ("cosine", "alignment", "estimate_variance", "relative_variance", "projected_gradient_snr"):
        assert [e.step for e in accumulator.Scalars(f"diagnostics/{name}")] == [0, 3]
    # BCD's cyclic order: step 0 perturbs the stem, step 3 the third layer; only they moved at the measured steps.
    assert [e.step for e in accumulator.Scalars("diagnostics/update_norm/stem")] == [0]
    assert [e.step for e in accumulator.Scalars("diagnostics/update_norm/layers.2")] == [3]
    assert "diagnostics/distance/head" in tags["scalars"]
    assert 0 < accumulator.Scalars("diagnostics/alignment")[0].value < 1
    histogram = accumulator.Histograms("diagnostics/block_update_norms")
    assert [h.step for h in histogram] == [0, 3] and histogram[0].histogram_value.num == 1
    image = accumulator.Images("diagnostics/block_activity")[-1]
    assert (image.height, image.width) == (5 * 8, 6 * 2)  # 5 blocks × 6 steps
    assert "hp/val/loss" in tags["scalars"]
    # The hparams tab: an experiment whose metrics include the final validation loss.
    experiments = [
        value.metadata.plugin_data.content
        for path in Path(logger.log_dir).glob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
        if value.tag == "_hparams_/experiment"
    ]
    assert any(b"hp/val/loss" in content for content in experiments)
    assert [m.step for m in diagnostics.measurements] == [0, 3]


class CountWork(Callback):
    """Per step: objective evaluations (forwards) and noise passes of dense directions (drawn into a buffer, or
    generated inside a fused move or update)."""

    def __init__(self, monkeypatch) -> None:
        self.counts = {"forwards": 0, "noise": 0}
        self.per_step: list[dict[str, int]] = []
        self.passes = count_noise_passes(monkeypatch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        pl_module.counts = self.counts
        self.counts["noise"] = len(self.passes)
        self.start = dict(self.counts)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.counts["noise"] = len(self.passes)
        self.per_step.append({k: self.counts[k] - self.start[k] for k in self.counts})



class CountingModel(LayeredModel):
    def training_step(self, batch, batch_idx):
        self.counts["forwards"] += 1
        return super().training_step(batch, batch_idx)


def work(monkeypatch, extra) -> list[dict[str, int]]:
    counter = CountWork(monkeypatch)
    # The counter first, so that its window opens before the diagnostics measure at the start of a due step.
    trainer = Trainer(**trainer_kwargs(max_steps=6, callbacks=[counter, *extra]))
    model = CountingModel()
    model.counts = counter.counts
    trainer.fit(model, loader(3))
    return counter.per_step


def test_no_forward_and_no_noise_is_added_on_steps_that_are_not_due(monkeypatch):
    plain = work(monkeypatch, [])
    diagnosed = work(monkeypatch, [ZODiagnostics(every_n_steps=4, extra_directions=2)])
    assert plain[0] == {"forwards": 2, "noise": plain[0]["noise"]} and plain[0]["noise"] > 0
    for step in (1, 2, 3, 5):
        assert diagnosed[step] == plain[step], step
    for step in (0, 4):  # 2·(1 + 2) probe forwards and one for the gradient on top of the step's 2
        assert diagnosed[step]["forwards"] == plain[step]["forwards"] + 7
        assert diagnosed[step]["noise"] > plain[step]["noise"]


def test_the_weights_train_exactly_as_without_the_callback():
    weights = []
    for callbacks in ([], [ZODiagnostics(every_n_steps=2)]):
        model = LayeredModel()
        Trainer(**trainer_kwargs(max_steps=5, callbacks=callbacks)).fit(model, loader(3))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(*weights)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"every_n_steps": 0}, "every_n_steps"), ({"extra_directions": 0}, "extra_directions"), ({"granularity": "x"}, "granularity")],
)
def test_bad_arguments_fail_early_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ZODiagnostics(**kwargs)


def test_a_backprop_run_is_refused_in_setup():
    model = LayeredModel(gradient="backprop")
    model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="backprop"):
        Trainer(**trainer_kwargs(max_steps=1, callbacks=[ZODiagnostics()])).fit(model, loader(1))


def test_under_ddp_rank_zero_logs_once_every_rank_applies_the_finder_and_none_deadlocks(tmp_path):
    from lightning.pytorch.strategies import DDPStrategy

    from tests.ddp_helpers import COLLECTIVE_TIMEOUT, Interleaved, Record, Regressor
    from zolightning.callbacks import ZOLearningRateFinder

    logger = TensorBoardLogger(tmp_path, name="ddp", version=0)  # spawned ranks and this process agree on it
    trainer = Trainer(
        max_steps=4,
        strategy=DDPStrategy(start_method="spawn", timeout=COLLECTIVE_TIMEOUT),
        use_distributed_sampler=False,
        callbacks=[ZOLearningRateFinder(trials=2, apply=True), ZODiagnostics(every_n_steps=2), Record(tmp_path)],
        **trainer_kwargs(devices=2, logger=logger),
    )
    trainer.fit(Regressor(), datamodule=Interleaved(8))
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert rank0["global_step"] == rank1["global_step"] == 4
    assert torch.equal(rank0["weights"], rank1["weights"])  # the same proposal applied on both ranks
    accumulator = events(logger)
    for name in ("cosine", "alignment", "estimate_variance"):
        assert [e.step for e in accumulator.Scalars(f"diagnostics/{name}")] == [0, 2]
    assert len(accumulator.Images("diagnostics/block_activity")) >= 2
