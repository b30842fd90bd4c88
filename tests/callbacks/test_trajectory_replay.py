"""``TrajectoryReplay``: a fit replays a log's first steps without forwards, then trains on as the run did."""

from __future__ import annotations

import pytest
from lightning.pytorch import Trainer

from tests.conftest import trainer_kwargs
from tests.ddp_helpers import STRUCTURES, Interleaved, Regressor
from tests.trajectory.trajectory_helpers import same_weights, train_logged
from zolightning.callbacks import TrajectoryLog, TrajectoryReplay
from zolightning.trajectory import TrajectoryError, read_trajectory
from zolightning.trajectory.format import encode_record


class Counting(Regressor):
    """Counts the objective's evaluations."""

    evaluations = 0

    def training_step(self, batch, batch_idx):
        self.evaluations += 1
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize(("structure", "zo"), [("bcd", {}), ("dense", {"accumulate_batches": 2})],
                         ids=["bcd-snapshot", "dense-arithmetic-accumulated"])
def test_a_fit_that_replays_three_steps_then_trains_three_equals_the_six_step_run(tmp_path, structure, zo):
    trained, log, _ = train_logged(tmp_path / "run", 6, structure, **zo)
    branch = Counting(**zo)
    callbacks = [*STRUCTURES[structure](), TrajectoryReplay(log, upto=3), TrajectoryLog(tmp_path / "branch.zot")]
    Trainer(max_steps=6, callbacks=callbacks, **trainer_kwargs()).fit(branch, datamodule=Interleaved(8))
    # Only the three trained steps ran forwards: two evaluations per micro-batch.
    assert branch.evaluations == 3 * 2 * zo.get("accumulate_batches", 1)
    assert same_weights(branch, trained)
    # The new log repeats the replayed records and goes on, byte for byte the run's.
    original, repeated = read_trajectory(log).steps, read_trajectory(tmp_path / "branch.zot").steps
    assert [encode_record(r) for r in repeated] == [encode_record(r) for r in original]


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [("zo-sgd", r"At step 0 this fit's learning rates are \(0.01,\), the log's \(0.004,\)"),
     ("zo-adam", r"written with zolightning.optim.sgd.ZOSGD, this fit steps zolightning.optim.adam.ZOAdam")],
    ids=["other-lr", "other-optimizer"],
)
def test_a_fit_with_other_settings_is_refused(tmp_path, optimizer, message):
    _, log, _ = train_logged(tmp_path / "run", 2)
    trainer = Trainer(max_steps=2, callbacks=[TrajectoryReplay(log)], **trainer_kwargs())
    with pytest.raises(TrajectoryError, match=message):
        trainer.fit(Regressor(optimizer), datamodule=Interleaved(8))
