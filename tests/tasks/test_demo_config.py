"""configs/demo.yaml wires the real task, data, optimizer and HeldOutEvaluation through the CLI (shrunk to seconds)."""

from __future__ import annotations

from pathlib import Path

from zolightning.callbacks import HeldOutEvaluation
from zolightning.cli import ZOLightningCLI
from zolightning.optim import ZOSGD
from zolightning.tasks import SequenceClassificationTask, TextClassificationDataModule

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def test_the_demo_config_runs_end_to_end_when_shrunk(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["train.py"])  # the arguments come from `args`, not from pytest's command line
    cli = ZOLightningCLI(
        args=[
            "fit", "--config", str(DEMO),
            "--trainer.max_steps", "3",
            "--trainer.val_check_interval", "3",
            "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--data.init_args.val_size", "20",
            "--data.init_args.test_size", "50",
        ]
    )
    model, data, trainer = cli.model, cli.datamodule, cli.trainer
    assert isinstance(model, SequenceClassificationTask) and isinstance(data, TextClassificationDataModule)
    assert model.encoder.config.hidden_size == 384  # the real MiniLM
    assert model.trainable_names == ["head.weight", "head.bias"]
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, ZOSGD) and optimizer.param_groups[0]["lr"] == 0.1
    # One owner per setting: ε is the optimizer's alone (no copy under `zo:`); the seeds follow `seed_everything`.
    assert optimizer.param_groups[0]["eps"] == 1e-3 and model.zo_config.eps is None
    assert model.zo_config.seed == data.seed == cli.config["fit"]["seed_everything"]
    assert data.max_length == 32 and data.batch_size == 32 and data.num_classes == 5
    assert trainer.global_step == 3
    callback = next(c for c in trainer.callbacks if isinstance(c, HeldOutEvaluation))
    assert callback.examples == 50 and callback.accuracy_after is not None
    assert "Held-out test accuracy (50 examples)" in capsys.readouterr().out
    events = list((tmp_path / "demo").rglob("events.out.tfevents.*"))
    assert events, "TensorBoard events under <save_dir>/demo"
