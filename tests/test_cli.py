"""The command line: LightningCLI with YAML configs, and what a run leaves for TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from zolightning.cli import DEFAULT_CONFIG, ZOLightningCLI, with_default_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ZO_TAGS = ["train/loss", "train/projected_grad", "train/lr", "train/eps", "train/time_forward", "train/time_perturb_update"]


def test_a_yaml_run_writes_tensorboard_events_with_the_zo_scalars(tmp_path):
    cli = ZOLightningCLI(
        args=["fit", "--config", str(CONFIGS / "smoke.yaml"), "--trainer.logger.init_args.save_dir", str(tmp_path)]
    )
    assert cli.trainer.global_step == 6
    run = tmp_path / "smoke" / "version_0"
    events = EventAccumulator(str(run))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ZO_TAGS + ["val/acc"]:
        assert tag in tags, (tag, tags)
    assert [event.step for event in events.Scalars("train/loss")] == [0, 1, 2, 3, 4, 5]
    assert all(event.value > 0 for event in events.Scalars("train/time_forward"))
    assert events.Scalars("train/lr")[-1].value == pytest.approx(1e-3)
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert hparams["zo"]["seed"] == 0 and hparams["trainable"] == "all"
    assert (run / "config.yaml").is_file()  # the resolved config, saved next to the events


def test_fit_without_a_config_runs_the_demo_config():
    assert with_default_config(["fit"]) == ["fit", "--config", str(DEFAULT_CONFIG)]
    assert with_default_config([]) == ["fit", "--config", str(DEFAULT_CONFIG)]
    assert with_default_config(["fit", "--config", "x.yaml"]) == ["fit", "--config", "x.yaml"]
    assert with_default_config(["fit", "--trainer.max_steps", "5"]) == ["fit", "--config", str(DEFAULT_CONFIG), "--trainer.max_steps", "5"]
    assert with_default_config(["fit", "--config=x.yaml"]) == ["fit", "--config=x.yaml"]
    assert with_default_config(["validate", "-c", "x.yaml"]) == ["validate", "-c", "x.yaml"]
    assert DEFAULT_CONFIG.is_file()


@pytest.mark.parametrize("name", sorted(path.name for path in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_parses_and_resolves(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ZOLightningCLI(args=["fit", "--config", str(CONFIGS / name), "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert "${" not in yaml.safe_dump(resolved)  # omegaconf interpolation resolved
    assert resolved["model"]["class_path"].startswith("zolightning.tasks.")
    assert resolved["optimizer"]["class_path"].startswith("zolightning.optim.")


@pytest.mark.parametrize("optimizer", ["ZOSGD", "ZOSGDSign", "ZOSGDCons", "ZOAdam", "HiZOO"])
def test_every_optimizer_and_the_estimator_options_are_configurable_from_yaml(optimizer, tmp_path):
    cli = ZOLightningCLI(
        args=[
            "fit", "--config", str(CONFIGS / "smoke.yaml"), "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
            "--optimizer", f"zolightning.optim.{optimizer}", "--optimizer.lr", "1e-4",
            "--model.init_args.zo.accumulate_batches", "2", "--model.init_args.zo.clip", "10",
            "--model.init_args.zo.eps_schedule", "cosine",
        ]
    )
    assert type(cli.model.optimizers().optimizer).__name__ == optimizer
    assert cli.trainer.global_step == 2 and cli.model.zo_config.accumulate_batches == 2


def scalars(run: Path, tag: str) -> list[float]:
    events = EventAccumulator(str(run))
    events.Reload()
    return [event.value for event in events.Scalars(tag)]


def test_clip_and_the_eps_schedule_given_on_the_command_line_take_effect(tmp_path):
    common = ["fit", "--config", str(CONFIGS / "smoke.yaml"), "--trainer.limit_val_batches", "0",
              "--trainer.max_steps", "6", "--optimizer.lr", "1e-3"]
    ZOLightningCLI(args=[*common, "--trainer.logger.init_args.save_dir", str(tmp_path / "free")])
    free = scalars(tmp_path / "free" / "smoke" / "version_0", "train/projected_grad")
    clip = max(abs(g) for g in free) / 10
    ZOLightningCLI(args=[
        *common, "--trainer.logger.init_args.save_dir", str(tmp_path / "shaped"),
        "--model.init_args.zo.clip", str(clip), "--model.init_args.zo.eps_schedule", "linear",
        "--model.init_args.zo.eps_final_ratio", "0.1",
    ])
    run = tmp_path / "shaped" / "smoke" / "version_0"
    shaped = scalars(run, "train/projected_grad")
    assert max(abs(g) for g in shaped) == pytest.approx(clip)  # bounded by the clip, which binds
    eps = scalars(run, "train/eps")
    assert eps[0] == pytest.approx(1e-3) and all(later < earlier for earlier, later in zip(eps, eps[1:]))
    assert eps[-1] == pytest.approx(1e-3 * (1 - 0.9 * 5 / 6), rel=1e-6)
