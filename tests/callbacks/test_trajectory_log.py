"""``TrajectoryLog``: what it refuses at set-up, where it writes, what a crash leaves, and resumed fits."""

from __future__ import annotations

from dataclasses import replace

import pytest
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import trainer_kwargs
from tests.ddp_helpers import Interleaved, Regressor
from tests.trajectory.trajectory_helpers import make_module, same_weights, train_logged
from zolightning.callbacks import StructureCallback, TrajectoryLog
from zolightning.structures import AllTensors
from zolightning.trajectory import TrajectoryError, read_trajectory, replay
from zolightning.trajectory.format import encode_record


class Unregistered(AllTensors):
    """A selection the structure registry does not name."""


def fit(tmp_path, module: Regressor, *callbacks: Callback, steps: int = 3, **trainer: object) -> Trainer:
    trainer_ = Trainer(max_steps=steps, callbacks=list(callbacks), **trainer_kwargs(default_root_dir=str(tmp_path), **trainer))
    trainer_.fit(module, datamodule=Interleaved(8))
    return trainer_


@pytest.mark.parametrize(
    ("module", "callbacks", "message"),
    [
        (lambda: Regressor("sgd"), [], r"SGD is a plain torch.optim optimizer: .* Use a ZO optimizer"),
        (lambda: Regressor("adam", gradient="backprop"), [], r"backprop.* cannot be logged"),
        (lambda: Regressor(), [lambda: StructureCallback(Unregistered())], r"Unregistered is not in .*STRUCTURES"),
    ],
    ids=["torch-sgd", "backprop", "unregistered-rule"],
)
def test_what_cannot_be_replayed_is_refused_before_the_first_step(tmp_path, module, callbacks, message):
    with pytest.raises(TrajectoryError, match=message):
        fit(tmp_path, module(), *[make() for make in callbacks], TrajectoryLog(tmp_path / "run.zot"))
    assert not (tmp_path / "run.zot").exists()


def test_arguments_are_checked_when_constructed():
    with pytest.raises(ValueError, match="`sync_every` must be an integer >= 0"):
        TrajectoryLog(sync_every=-1)
    with pytest.raises(TypeError, match="`path` must be a file path or None"):
        TrajectoryLog(path=3)  # type: ignore[arg-type]


def test_the_default_log_lies_next_to_the_checkpoints(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=2, save_top_k=-1)
    fit(tmp_path, Regressor(), checkpoints, TrajectoryLog(), steps=4, enable_checkpointing=True)
    trajectory = read_trajectory(tmp_path / "ckpts" / "trajectory.zot")
    assert len(trajectory.steps) == 4
    # The weights' fingerprint at each checkpoint and at the end: a replay checks each one it passes.
    assert sorted({record.steps for record in trajectory.weights}) == [2, 4]
    assert replay(make_module(), trajectory).verified == [2, 4]


class Crash(Callback):
    """Reads the log as a process killed before batch 4 would leave it, then stops the fit."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 4:
            self.steps = len(read_trajectory(trainer.default_root_dir + "/run.zot").steps)
            raise RuntimeError("crash")


def test_every_record_is_on_disk_as_soon_as_its_step_ends_and_a_crash_leaves_them(tmp_path):
    module, crash = Regressor(), Crash()
    with pytest.raises(RuntimeError, match="crash"):
        fit(tmp_path, module, TrajectoryLog(tmp_path / "run.zot", fingerprint_checkpoints=False), crash, steps=6)
    assert crash.steps == 4
    trajectory = read_trajectory(tmp_path / "run.zot")
    assert len(trajectory.steps) == 4
    base = make_module()
    replay(base, trajectory)
    assert same_weights(base, module)


def test_a_resumed_fit_cuts_what_followed_the_checkpoint_and_appends_or_branches(tmp_path):
    _, log, trainer = train_logged(tmp_path, 3)
    trainer.save_checkpoint(tmp_path / "step3.ckpt")
    first = read_trajectory(log).steps
    with open(log, "ab") as file:  # a step the checkpoint does not know, then a torn record
        file.write(encode_record(replace(first[0], step=3)) + b"\x30\x00\x00")
    branched, branch, _ = train_logged(tmp_path / "b", 5, ckpt_path=tmp_path / "step3.ckpt",
                                       log=TrajectoryLog(tmp_path / "branch.zot"))
    assert branch == tmp_path / "branch.zot"
    with pytest.raises(TrajectoryError, match="truncated"):
        read_trajectory(log)  # the source is left as it was
    resumed, _, _ = train_logged(tmp_path / "c", 6, ckpt_path=tmp_path / "step3.ckpt", log=TrajectoryLog())
    for path, module, steps in ((branch, branched, 5), (log, resumed, 6)):
        trajectory = read_trajectory(path)
        assert [r.step for r in trajectory.steps] == list(range(steps))
        assert all(encode_record(a) == encode_record(b) for a, b in zip(first, trajectory.steps[:3]))
        base = make_module()
        assert replay(base, trajectory).verified[-1] == steps
        assert same_weights(base, module)
