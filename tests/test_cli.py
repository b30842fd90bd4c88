"""The command line: LightningCLI with YAML configs, and what a run leaves for TensorBoard."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from zolightning.cli import DEFAULT_CONFIG, ZOLightningCLI, console_main, main, with_default_config

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
    # A run that names its own model or data never inherits the demo's; a dotted override still tweaks the demo.
    assert with_default_config(["fit", "--model", "m.M", "--data", "m.D"]) == ["fit", "--model", "m.M", "--data", "m.D"]
    assert with_default_config(["fit", "--model=m.M"]) == ["fit", "--model=m.M"]
    assert with_default_config(["fit", "--model.init_args.zo.seed", "1"])[:3] == ["fit", "--config", str(DEFAULT_CONFIG)]
    assert DEFAULT_CONFIG.is_file()


@pytest.mark.parametrize("name", sorted(path.name for path in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_parses_and_resolves(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ZOLightningCLI(args=["fit", "--config", str(CONFIGS / name), "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert "${" not in yaml.safe_dump(resolved)  # omegaconf interpolation resolved
    assert resolved["model"]["class_path"].startswith("zolightning.tasks.")
    backprop = (resolved["model"]["init_args"].get("zo") or {}).get("gradient") == "backprop"
    optimizer = (resolved.get("optimizer") or {}).get("class_path", "")
    # A ZO recipe names a ZO optimizer (or relies on the default ZOSGD); the backprop baselines name a torch one.
    assert optimizer.startswith("torch.optim.") if backprop else optimizer in ("",) or optimizer.startswith(
        "zolightning.optim."
    )


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


def test_a_users_own_model_and_data_run_from_their_folder_without_the_demo_config(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.py").write_text(
        "import torch\n"
        "from lightning.pytorch import LightningDataModule\n"
        "from torch.utils.data import DataLoader, TensorDataset\n"
        "from zolightning import ZOLightningModule\n\n"
        "class Tiny(ZOLightningModule):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.layer = torch.nn.Linear(4, 1)\n"
        "    def training_step(self, batch, batch_idx):\n"
        "        return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])\n\n"
        "class TinyData(LightningDataModule):\n"
        "    def train_dataloader(self):\n"
        "        x = torch.randn(32, 4)\n"
        "        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    monkeypatch.setattr("sys.argv", ["zolightning", "fit", "--model", "mine.Tiny", "--data", "mine.TinyData",
                                     "--trainer.max_steps", "3", "--trainer.logger", "false",
                                     "--trainer.enable_checkpointing", "false"])
    cli = main()
    assert type(cli.model).__name__ == "Tiny" and cli.trainer.global_step == 3
    assert not any(type(c).__name__ == "HeldOutEvaluation" for c in cli.trainer.callbacks)  # nothing of the demo's


def test_a_command_line_run_prints_no_warning_a_user_cannot_act_on(tmp_path, monkeypatch, capfd, recwarn):
    monkeypatch.setattr("sys.argv", ["train.py", "fit", "--config", str(CONFIGS / "smoke.yaml"),
                                     "--trainer.logger.init_args.save_dir", str(tmp_path)])
    main()
    printed = "".join(capfd.readouterr())
    messages = [str(w.message) for w in recwarn] + [printed]
    for noise in ("args", "will be overridden", "LeafSpec", "litlogger", "manual_backward", "set_vital"):
        assert not [m for m in messages if noise in m and "Held-out" not in m], noise
    assert "Held-out test accuracy" in printed  # the smoke run ends with its result line


def test_fit_help_opens_with_what_zo_needs(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    first = capsys.readouterr().out.splitlines()[:20]
    assert any("Zeroth-order" in line for line in first) and any("zo:" in line for line in first)


def test_the_tensorboard_run_tells_the_whole_story(tmp_path):
    cli = ZOLightningCLI(args=[
        "fit", "--config", str(CONFIGS / "smoke.yaml"), "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--trainer.callbacks+=zolightning.callbacks.BlockRotation",
    ])
    run = tmp_path / "smoke" / "version_0"
    events = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    held_out = next(c for c in cli.trainer.callbacks if type(c).__name__ == "HeldOutEvaluation")
    assert events.Scalars("hp_metric")[-1].value == pytest.approx(held_out.accuracy_after)
    assert any(tag.startswith("heldout/class_accuracy/") for tag in events.Tags()["scalars"])
    assert "heldout/confusion_matrix" in events.Tags()["images"]
    legend = events.Tensors("train/active_block_names/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| 0 |" in legend and "embeddings" in legend
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert hparams["optimizer"]["class"] == "ZOSGD" and hparams["optimizer"]["lr"] == pytest.approx(1e-3)
    assert hparams["zo"]["lr"] is None  # no default-optimizer learning rate that the run did not use


def test_a_run_resumed_mid_epoch_from_the_command_line_is_bitwise_the_straight_run(tmp_path, monkeypatch, recwarn):
    import torch

    monkeypatch.chdir(tmp_path)  # without a logger, each run's config.yaml lands in the working directory
    def run(steps: int, *extra: str):
        return ZOLightningCLI(args=[
            "fit", "--config", str(CONFIGS / "smoke.yaml"), "--trainer.logger", "false", "--trainer.max_steps", str(steps),
            "--trainer.limit_val_batches", "0", *extra,
        ], save_config_kwargs={"overwrite": True})

    straight = run(6).model
    checkpoints = tmp_path / "ckpt"
    run(3, "--trainer.enable_checkpointing", "true", "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={checkpoints}", "--trainer.callbacks.every_n_train_steps=3",
        "--trainer.callbacks.save_top_k=-1")
    (checkpoint,) = checkpoints.glob("*step=3.ckpt")  # an epoch is 8 batches: step 3 is mid-epoch
    resumed = run(6, "--ckpt_path", str(checkpoint)).model
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))
    assert not [w for w in recwarn if "not resumable" in str(w.message) or "restart" in str(w.message).lower()]


def test_seed_everything_on_the_command_line_reaches_every_interpolation(capsys):
    # The configs tie zo.seed and the data split to `${seed_everything}`; a seed given on the command line (as the
    # multi-seed driver does) must change all of them, not only Lightning's global seed.
    with pytest.raises(SystemExit):
        ZOLightningCLI(args=["fit", "--config", str(CONFIGS / "llm_mezo.yaml"), "--seed_everything", "3",
                             "--print_config"])
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["seed_everything"] == 3
    assert resolved["model"]["init_args"]["zo"]["seed"] == 3
    assert resolved["data"]["init_args"]["seed"] == 3


def test_an_lr_scheduler_section_steps_every_optimizer_step_and_lr_scales_takes_the_block_size_rule(tmp_path):
    # ZO recipes count steps: a cosine over T_max=6 must reach its end at step 6, not after 6 epochs.
    cli = ZOLightningCLI(args=[
        "fit", "--config", str(CONFIGS / "smoke.yaml"), "--trainer.limit_val_batches", "0",
        "--trainer.max_steps", "6", "--optimizer.lr", "1e-3", "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--lr_scheduler", "torch.optim.lr_scheduler.CosineAnnealingLR", "--lr_scheduler.T_max", "6",
        "--model.init_args.zo.lr_scales", "by_block_size",
    ])
    lrs = scalars(tmp_path / "smoke" / "version_0", "train/lr")
    assert lrs[0] == pytest.approx(1e-3 * (1 + math.cos(math.pi / 6)) / 2)  # logged after the first step
    assert all(later < earlier for earlier, later in zip(lrs, lrs[1:]))
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert cli.model.zo_config.lr_scales == {"by_block_size": 1.0}


REPO = Path(__file__).resolve().parent.parent


def run_command(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_the_command_exits_0_after_a_successful_run_and_2_after_an_argument_error(tmp_path):
    # The console script did `sys.exit(main())` with main returning the CLI object: every successful run exited 1.
    script = Path(sys.executable).parent / "zolightning"
    quick = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--trainer.logger", "false"]
    done = run_command(str(script), "fit", "--config", str(CONFIGS / "smoke.yaml"), *quick, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ZOLightningCLI object" not in done.stdout + done.stderr
    typo = run_command(sys.executable, str(REPO / "train.py"), "fit", "--config", str(CONFIGS / "smoke.yaml"),
                       "--trainer.max_stepz", "2", cwd=tmp_path)
    assert typo.returncode == 2 and "max_stepz" in typo.stderr


def test_console_main_returns_0_and_main_still_returns_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quick = ["fit", "--config", str(CONFIGS / "smoke.yaml"), "--trainer.max_steps", "1", "--trainer.limit_val_batches",
             "0", "--trainer.logger", "false"]
    assert console_main(quick) == 0
    cli = main([*quick, "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path / "second")])
    assert isinstance(cli, ZOLightningCLI) and cli.trainer.global_step == 2


def short_error(capsys, *args: str) -> str:
    """stderr of a run that must end as an argument error (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "smoke.yaml"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) < 6, err  # was 19 lines of jsonargparse's nested Union report
    assert "Union" not in err and "Given value" not in err, err
    return err


@pytest.mark.parametrize(
    ("option", "owner", "key", "close"),
    [("--model.init_args.zo.sede", "ZO", "sede", "seed"),
     ("--data.init_args.bach_size", "TextClassificationDataModule", "bach_size", "batch_size"),
     ("--model.init_args.num_clases", "SequenceClassificationTask", "num_clases", "num_classes")],
)
def test_a_typo_in_a_nested_key_is_one_short_error_with_a_close_match(capsys, option, owner, key, close):
    err = short_error(capsys, option, "4")
    assert f"error: Unknown {owner} option(s) ['{key}'] (did you mean '{close}'?); the options are [" in err


def test_a_value_the_data_module_refuses_is_its_own_message(capsys):
    err = short_error(capsys, "--data.init_args.batch_size", "0")  # raised inside the data module's __init__
    assert "error: TextClassificationDataModule: `batch_size` must be a positive integer, got 0." in err
    err = short_error(capsys, "--data.init_args.padding_side", "middle")  # refused by its type, while parsing
    assert "error: `padding_side` of TextClassificationDataModule: Expected a typing.Literal['right', 'left']" in err


def test_a_typo_in_a_config_file_reads_the_same(capsys, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  init_args:\n    zo:\n      sede: 1\n")
    err = short_error(capsys, "--config", str(typo))
    assert "Unknown ZO option(s) ['sede'] (did you mean 'seed'?)" in err
