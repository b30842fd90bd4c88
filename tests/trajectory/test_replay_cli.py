"""``python -m zolightning.replay``: rebuilds the module from the log, replays, saves; one-line errors."""

from __future__ import annotations

import re

import pytest
import torch
from lightning.pytorch import Trainer

from tests.conftest import trainer_kwargs
from tests.ddp_helpers import Interleaved
from tests.trajectory.trajectory_helpers import SavedRegressor
from zolightning.callbacks import TrajectoryLog
from zolightning.replay import main
from zolightning.trajectory import read_trajectory
from zolightning.trajectory.format import FORMAT_VERSION, MAGIC, encode_preamble, encode_record


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step run of ``SavedRegressor`` with its log; returns the log's path and the trained weights."""
    folder = tmp_path_factory.mktemp("run")
    module = SavedRegressor()
    trainer = Trainer(max_steps=4, callbacks=[TrajectoryLog(folder / "run.zot")], **trainer_kwargs())
    trainer.fit(module, datamodule=Interleaved(8))
    return folder / "run.zot", {name: value.clone() for name, value in module.state_dict().items()}


def test_the_cli_rebuilds_the_module_from_the_header_and_saves_the_trained_weights(run, tmp_path, capsys):
    log, trained = run
    assert main([str(log), "--output", str(tmp_path / "w.pt")]) == 0
    replayed = torch.load(tmp_path / "w.pt")
    assert all(torch.equal(replayed[name], value) for name, value in trained.items())
    assert "replayed 4 steps" in capsys.readouterr().out
    assert main([str(log), "--upto", "2", "--output", str(tmp_path / "w2.pt")]) == 0
    assert not torch.equal(torch.load(tmp_path / "w2.pt")["net.0.weight"], trained["net.0.weight"])


def rewrite(log, path, *, header=None, version=FORMAT_VERSION, cut=0):
    trajectory = read_trajectory(log)
    preamble = encode_preamble(header or trajectory.header)
    data = MAGIC + version.to_bytes(2, "little") + preamble[len(MAGIC) + 2 :]
    data += b"".join(encode_record(r) for r in trajectory.steps)
    path.write_bytes(data[: len(data) - cut])
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(cut=5), "truncated (.*) at step 3"),
        (dict(version=FORMAT_VERSION + 1), "newer than this zolightning reads"),
        (dict(header="other-base"), "does not hold the log's base weights"),
    ],
    ids=["truncated", "newer-version", "wrong-base"],
)
def test_the_cli_refuses_a_bad_log_with_one_line_and_status_2(run, tmp_path, capsys, change, message):
    log, _ = run
    if change.get("header") == "other-base":
        change = dict(header={**read_trajectory(log).header, "base_fingerprint": "00" * 32})
    assert main([str(rewrite(log, tmp_path / "bad.zot", **change)), "--output", str(tmp_path / "w.pt")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: ")
    assert re.search(message, error)
    assert not (tmp_path / "w.pt").exists()
