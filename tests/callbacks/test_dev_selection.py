"""DevSelection: the checkpoint is chosen on dev, and the reported test score is that checkpoint's, not the best
test score nor the last one."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer
from torch.utils.data import DataLoader

from tests.conftest import trainer_kwargs
from zolightning import ZOConfig, ZOLightningModule
from zolightning.callbacks import DevSelection
from zolightning.run_results import RESULTS_FILE_VARIABLE, read_results

# Accuracy of the model whose weight is w (= the number of steps taken), on each split. Dev peaks at step 4, where
# test is 0.8; test itself peaks at step 6 and the last step (8) is worse than both.
DEV = {0: 0.2, 2: 0.5, 4: 0.9, 6: 0.6, 8: 0.7}
TEST = {0: 0.1, 2: 0.3, 4: 0.8, 6: 0.95, 8: 0.4}
N = 20


class Scheduled(ZOLightningModule):
    """One weight w that backprop on loss −w with SGD(lr=1) raises by exactly 1 per step; its predictions on a split
    are right for the first ``accuracy(w)·N`` examples."""

    def __init__(self) -> None:
        super().__init__(zo=ZOConfig(gradient="backprop"))
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.num_classes = 2

    def forward(self, batch):
        return self.w * 1.0

    def training_step(self, batch, batch_idx):
        return -self(batch)

    def configure_optimizers(self):
        return torch.optim.SGD([self.w], lr=1.0)

    def predict_labels(self, batch):
        table = DEV if batch["split"][0] == 0 else TEST
        correct = round(table[int(round(self.w.item()))] * N)
        right = batch["index"] < correct
        return torch.where(right, batch["labels"], 1 - batch["labels"])


def items(split: int) -> list[dict]:
    return [{"index": i, "labels": i % 2, "split": split} for i in range(N)]


class SplitData(LightningDataModule):
    def train_dataloader(self):
        return DataLoader(items(0), batch_size=N)

    def val_dataloader(self):
        return DataLoader(items(0), batch_size=7)

    def test_dataloader(self):
        return DataLoader(items(1), batch_size=7)


def test_reports_the_test_score_of_the_best_dev_checkpoint_and_restores_it(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results.jsonl"
    monkeypatch.setenv(RESULTS_FILE_VARIABLE, str(results))
    model = Scheduled()
    selection = DevSelection(every_n_steps=2)
    trainer = Trainer(max_steps=8, callbacks=[selection], limit_val_batches=0, default_root_dir=tmp_path,
                      **trainer_kwargs())
    trainer.fit(model, SplitData())
    assert [entry["step"] for entry in selection.history] == [2, 4, 6, 8]
    # torchmetrics scores in fp32: 0.9 comes back as 0.89999998.
    assert [entry["accuracy"] for entry in selection.history] == pytest.approx([DEV[s] for s in (2, 4, 6, 8)])
    assert selection.result["selected_step"] == 4
    assert [step for step, _ in selection.result["dev_curve"]] == [2, 4, 6, 8]
    assert [score for _, score in selection.result["dev_curve"]] == pytest.approx([DEV[s] for s in (2, 4, 6, 8)])
    timeline = selection.result["dev_timeline"]  # step, training seconds, training forwards, dev accuracy
    assert [row[0] for row in timeline] == [2, 4, 6, 8] and [row[2] for row in timeline] == [2, 4, 6, 8]
    assert [row[3] for row in timeline] == pytest.approx([DEV[s] for s in (2, 4, 6, 8)])
    assert 0 <= timeline[0][1] <= timeline[-1][1] <= selection.result["train_seconds"]
    assert selection.result["test_accuracy"] == pytest.approx(TEST[4])
    assert selection.result["dev_accuracy"] == pytest.approx(DEV[4])
    assert model.w.item() == 4.0  # the chosen weights are left in the module
    assert selection.result["train_forwards"] == 8  # one forward per backprop step, evaluations not counted
    assert "Selected on dev: step 4 of 8" in capsys.readouterr().out
    assert read_results(results)["dev_selection"]["test_accuracy"] == pytest.approx(TEST[4])
    assert json.loads((tmp_path / "results.jsonl").read_text().splitlines()[-1])["selected_step"] == 4


def test_without_training_the_initial_model_is_the_candidate(tmp_path):
    model = Scheduled()
    selection = DevSelection(every_n_steps=2, verbose=False)
    trainer = Trainer(max_steps=0, callbacks=[selection], limit_val_batches=0, default_root_dir=tmp_path,
                      **trainer_kwargs())
    trainer.fit(model, SplitData())
    assert selection.result["selected_step"] == 0 and selection.result["steps"] == 0
    assert selection.result["test_accuracy"] == pytest.approx(TEST[0])
    assert selection.result["train_forwards"] == 0


def test_keep_last_weights_when_asked(tmp_path):
    model = Scheduled()
    selection = DevSelection(every_n_steps=2, restore_best=False, verbose=False)
    trainer = Trainer(max_steps=8, callbacks=[selection], limit_val_batches=0, default_root_dir=tmp_path,
                      **trainer_kwargs())
    trainer.fit(model, SplitData())
    assert model.w.item() == 8.0
    assert selection.result["test_accuracy"] == pytest.approx(TEST[8])


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="every_n_steps"):
        DevSelection(every_n_steps=0)
    with pytest.raises(ValueError, match="monitor"):
        DevSelection(monitor="loss")


def test_a_fit_stopped_before_its_first_step_selects_nothing_and_scores_no_split(tmp_path, capsys):
    class StopAtStart(Callback):  # as `ZOLearningRateFinder(stop_after=True)` does
        def on_train_start(self, trainer, pl_module):
            trainer.should_stop = True

    class Counted(Scheduled):
        scored = 0

        def predict_labels(self, batch):
            Counted.scored += 1
            return super().predict_labels(batch)

    selection = DevSelection(every_n_steps=2)
    trainer = Trainer(max_steps=8, callbacks=[selection, StopAtStart()], limit_val_batches=0, default_root_dir=tmp_path,
                      **trainer_kwargs())
    trainer.fit(Counted(), SplitData())
    assert trainer.global_step == 0 and Counted.scored == 0 and selection.result is None
    assert capsys.readouterr().out.splitlines() == [
        "Selected on dev: nothing; the test set was not scored, because training stopped before its first step."
    ]
