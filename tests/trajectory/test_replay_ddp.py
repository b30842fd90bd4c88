"""Replay of a two-rank DDP run (``ddp_spawn``, gloo) on one process: bitwise rank 0's weights."""

from __future__ import annotations

import pytest
import torch

from tests.ddp_helpers import flat_weights
from tests.trajectory.trajectory_helpers import make_module, train_logged
from zolightning.trajectory import read_trajectory, replay


@pytest.mark.parametrize(
    ("structure", "zo"),
    [("dense", {"accumulate_batches": 2}), ("bcd+sparse", {"query_parallel": True}), ("lozo", {})],
    ids=["dense-arithmetic-accumulated", "bcd+sparse-query-parallel", "low-rank"],
)
def test_a_two_rank_run_replays_on_one_process_to_the_ranks_weights(tmp_path, structure, zo):
    _, log, _ = train_logged(tmp_path, 4, structure, devices=2, **zo)
    trajectory = read_trajectory(log)
    assert trajectory.header["world_size"] == 2 and len(trajectory.steps) == 4
    # Under query parallelism every rank's direction is logged (2 ranks × 1 direction): the reduce's output.
    assert trajectory.steps[0].numbers.shape[0] == (2 if zo.get("query_parallel") else 1)
    rank0 = torch.load(tmp_path / "rank0.pt")["weights"]
    module = make_module(**zo)
    assert not torch.equal(flat_weights(module), rank0)
    assert replay(module, log).verified == [4]
    assert torch.equal(flat_weights(module), rank0)
