"""One hparams header per run: the module's own hyperparameters, ``zo/…``, ``optimizer/…`` and the data module's,
with the run's final metrics as TensorBoard's hparams columns."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from lightning.pytorch import Callback, LightningDataModule, Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import trainer_kwargs
from zolightning import ZOLightningModule
from zolightning.optim import ZOSGD
from zolightning.run_hparams import final_metric_names


class Regressor(ZOLightningModule):
    def __init__(self, hidden: int = 4, lr: float = 0.01) -> None:
        super().__init__(zo={"seed": 0})
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def training_step(self, batch, batch_idx):
        return self.loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self.loss(batch))

    def configure_optimizers(self):
        return ZOSGD(self.named_parameters(), lr=self.hparams.lr, eps=1e-3)


class Data(LightningDataModule):
    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        x = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
        self.data = TensorDataset(x, x.sum(dim=1, keepdim=True))

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.hparams.batch_size)

    val_dataloader = test_dataloader = train_dataloader


class FinalResult(Callback):
    """Logs a result straight to the loggers at the end of the fit, as DevSelection and HeldOutEvaluation do."""

    def on_fit_end(self, trainer, pl_module):
        for logger in trainer.loggers:
            logger.log_metrics({"selected/accuracy": 0.5}, step=trainer.global_step)


def hparams_records(log_dir: str) -> dict[str, list[plugin_data_pb2.HParamsPluginData]]:
    """Every hparams record in the run's event files, by kind: experiment, session_start_info, session_end_info."""
    records: dict[str, list[plugin_data_pb2.HParamsPluginData]] = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag.startswith("_hparams_/"):
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    records.setdefault(value.tag.removeprefix("_hparams_/"), []).append(data)
    return records


def test_a_fit_and_its_test_write_one_header_with_every_hyperparameter_and_the_final_metrics(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="run")
    csv = CSVLogger(tmp_path, name="csv")
    trainer = Trainer(**trainer_kwargs(max_steps=4, logger=[logger, csv], limit_val_batches=1, callbacks=FinalResult()))
    model, data = Regressor(hidden=5), Data()
    trainer.fit(model, data)
    trainer.test(model, data)  # into the same logger: its header would only hide behind the fit's

    records = hparams_records(logger.log_dir)
    assert [len(records[kind]) for kind in ("session_start_info", "experiment")] == [1, 1]
    start = records["session_start_info"][0].session_start_info.hparams
    assert start["hidden"].number_value == 5 and start["lr"].number_value == 0.01  # the module's own
    assert start["zo/seed"].number_value == 0 and start["zo/estimator"].string_value == "two-sided"
    assert start["optimizer/class"].string_value == "ZOSGD" and start["optimizer/lr"].number_value == 0.01
    assert start["batch_size"].number_value == 8  # the data module's
    experiment = records["experiment"][0].experiment
    assert {info.name for info in experiment.hparam_infos} == set(start)
    columns = {info.name.tag for info in experiment.metric_infos}
    assert {"val/loss", "test/loss", "selected/accuracy"} <= columns  # self.log'd, the test twin, a callback's
    assert not [column for column in columns if column.startswith("train/")]
    scalars = {v.tag for path in Path(logger.log_dir).glob("events.*") for e in EventFileLoader(str(path)).Load()
               for v in e.summary.value}
    assert "hp_metric" not in scalars  # Lightning's placeholder −1 was never written
    saved = yaml.safe_load((Path(logger.log_dir) / "hparams.yaml").read_text())
    assert saved["optimizer"]["class"] == "ZOSGD" and saved["hidden"] == 5 and "zo" in saved
    assert yaml.safe_load((Path(csv.log_dir) / "hparams.yaml").read_text())["optimizer"]["lr"] == 0.01  # not TB: once


def test_a_test_run_into_a_fresh_logger_gets_lightnings_header_back(tmp_path):
    model, data = Regressor(), Data()
    Trainer(**trainer_kwargs(max_steps=2, logger=TensorBoardLogger(tmp_path, name="fit"))).fit(model, data)
    tester = TensorBoardLogger(tmp_path, name="test")
    Trainer(**trainer_kwargs(logger=tester)).test(model, data)
    start = hparams_records(tester.log_dir)["session_start_info"]
    assert len(start) == 1 and start[0].session_start_info.hparams["hidden"].number_value == 4


def test_the_columns_are_the_logged_results_with_a_test_twin_for_each_validation_metric():
    names = ["train/loss", "diagnostics/cosine", "epoch", "val/acc", "hp/val/loss", "dev/accuracy", "hp_metric",
             "validation_f1", "value_error"]
    assert final_metric_names(names) == [
        "dev/accuracy", "hp/test/loss", "hp/val/loss", "hp_metric", "test/acc", "test_f1", "val/acc", "validation_f1",
        "value_error",
    ]


def test_a_trainer_with_hparams_logging_off_gets_no_header(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="run")
    Trainer(**trainer_kwargs(max_steps=2, logger=logger, enable_autolog_hparams=False)).fit(Regressor(), Data())
    assert hparams_records(logger.log_dir) == {}
