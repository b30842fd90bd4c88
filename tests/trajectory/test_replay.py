"""Replay: a logged run's weights rebuilt bitwise from the base weights, for every structure and optimizer; partial
replay; training on from a replayed state; refusal of the wrong base weights."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.ddp_helpers import Interleaved
from tests.trajectory.trajectory_helpers import make_module, same_weights, train_logged
from zolightning.trajectory import TrajectoryError, read_trajectory, replay
from zolightning.trajectory.format import encode_preamble, encode_record

STEPS = 6

# (structure, optimizer, ZO options, precision): each restore path (arithmetic in fp32 dense, snapshot for a block and
# in bf16), each structure, q directions, accumulation, each optimizer whose state is a function of the history, each
# option of an optimizer (ZO-SGD-Sign's elementwise sign) and an optimizer whose update compares measured candidates.
CASES = {
    "dense-fp32-arithmetic": ("dense", None, {}, None),
    "bcd": ("bcd", None, {}, None),
    "sparse": ("sparse", None, {}, None),
    "low-rank": ("lozo", None, {}, None),
    "q2": ("dense", None, {"num_directions": 2}, None),
    "accumulate2": ("dense", None, {"accumulate_batches": 2}, None),
    "bf16-snapshot": ("dense", None, {}, "bf16-true"),
    "momentum": ("sparse", "zo-sgd-mmt", {}, None),
    "sign": ("dense", "zo-sgd-sign", {}, None),
    "sign-elementwise": ("dense", "zo-sgd-sign-elementwise", {}, None),
    "cons": ("dense", "zo-sgd-cons", {}, None),
    "cons-bcd-accumulate2": ("bcd", "zo-sgd-cons", {"accumulate_batches": 2}, None),
    "adam": ("bcd", "zo-adam", {}, None),
    "hizoo": ("lozo", "hizoo", {"accumulate_batches": 2}, None),
    "one-sided-eps-schedule": ("dense", None, {"estimator": "one-sided", "eps_schedule": "cosine"}, None),
    "fzoo": ("dense", None, {"estimator": "fzoo", "num_directions": 2}, None),
    "forward-gradient": ("bcd", None, {"estimator": "forward-gradient"}, None),
    # zo.noise: torch, the noise of runs made before counter noise (every case above runs on counter noise).
    "torch-noise-dense": ("dense", None, {"noise": "torch"}, None),
    "torch-noise-bcd-bf16": ("bcd", None, {"noise": "torch"}, "bf16-true"),
    "torch-noise-momentum": ("sparse", "zo-sgd-mmt", {"noise": "torch"}, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_replay_rebuilds_the_trained_weights_bitwise(tmp_path, case):
    structure, optimizer, zo, precision = CASES[case]
    trained, log, _ = train_logged(tmp_path, STEPS, structure, optimizer=optimizer, precision=precision, **zo)
    base = make_module(optimizer, precision, **zo)
    assert not same_weights(base, trained)  # training moved the weights
    result = replay(base, log)
    assert same_weights(base, trained)
    assert result.steps == STEPS and result.verified == [STEPS]  # the log's own fingerprint of the final weights
    if "accumulate_batches" in zo:
        assert {r.micro_batches for r in read_trajectory(log).steps} == {2}


def test_an_optimizer_option_is_in_the_header_and_replays(tmp_path):
    """ZO-SGD-Sign's ``elementwise`` is a group setting: the header keeps it, and a replay that dropped it would
    rebuild the other sign rule and miss the trained weights."""
    trained, log, _ = train_logged(tmp_path, STEPS, optimizer="zo-sgd-sign-elementwise")
    header = read_trajectory(log).header
    assert [group["settings"]["elementwise"] for group in header["optimizer"]["groups"]] == [True]
    base = make_module("zo-sgd-sign-elementwise")
    result = replay(base, log)
    assert same_weights(base, trained) and all(group["elementwise"] for group in result.optimizer.param_groups)


def test_partial_replay_equals_the_shorter_run(tmp_path):
    _, log, _ = train_logged(tmp_path / "long", STEPS)
    short, _, _ = train_logged(tmp_path / "short", 3)
    base = make_module()
    assert replay(base, log, upto=3).steps == 3
    assert same_weights(base, short)
    with pytest.raises(ValueError, match=r"`upto` must be an integer in \[0, 6\]"):
        replay(make_module(), log, upto=7)


@pytest.mark.parametrize("optimizer", [None, "zo-adam"])
def test_training_on_from_a_replayed_state_equals_the_uninterrupted_run(tmp_path, optimizer):
    trained, log, _ = train_logged(tmp_path, STEPS, optimizer=optimizer)
    module = make_module(optimizer)
    result = replay(module, log, upto=3)
    # Batches 3, 4, 5 of the run (one rank sees the whole data set, in order), with the replayed optimizer and engine.
    batches = list(Interleaved(batch_size=8, shard=False).train_dataloader())[3:STEPS]
    for step, (x, y) in enumerate(batches, start=3):
        result.optimizer.step(lambda x=x, y=y: torch.nn.functional.mse_loss(module.net(x), y), step=step)
    assert same_weights(module, trained)


def test_replay_onto_other_base_weights_is_refused(tmp_path):
    _, log, _ = train_logged(tmp_path, 2)
    other = make_module()
    with torch.no_grad():
        other.net[0].bias[0] += 1e-3
    with pytest.raises(TrajectoryError, match="does not hold the log's base weights"):
        replay(other, log)


def test_replay_onto_another_dtype_is_refused(tmp_path):
    _, log, _ = train_logged(tmp_path, 2)
    with pytest.raises(TrajectoryError, match=r"\['torch.float32'\] weights, the module has \['torch.float64'\]"):
        replay(make_module().double(), log)


def test_a_step_that_plans_otherwise_than_logged_is_refused_naming_it(tmp_path):
    # A log whose step 2 claims another active block than the structure gives: the replay stops there.
    _, log, _ = train_logged(tmp_path, 4, "bcd")
    trajectory = read_trajectory(log)
    steps = list(trajectory.steps)
    steps[2] = replace(steps[2], active_block=steps[2].active_block + 1)
    forged = tmp_path / "forged.zot"
    forged.write_bytes(encode_preamble(trajectory.header) + b"".join(encode_record(r) for r in steps))
    with pytest.raises(TrajectoryError, match=r"Step 2 does not replay as logged: the plan"):
        replay(make_module(), forged)



@pytest.mark.parametrize("noise", ["counter", "torch"])
def test_the_header_records_the_noise_and_a_log_from_before_it_replays_with_torch_noise(tmp_path, noise):
    trained, log, _ = train_logged(tmp_path, 3, noise=noise)
    trajectory = read_trajectory(log)
    assert trajectory.header["zo"]["noise"] == noise
    header = {**trajectory.header, "zo": {k: v for k, v in trajectory.header["zo"].items() if k != "noise"}}
    older = tmp_path / "older.zot"  # as written before `zo.noise` existed: the same records after another header
    original = log.read_bytes()
    preamble = encode_preamble(trajectory.header)
    assert original.startswith(preamble)
    older.write_bytes(encode_preamble(header) + original[len(preamble):])
    base = make_module(noise=noise)
    if noise == "torch":
        assert replay(base, older).verified == [3]
        assert same_weights(base, trained)
    else:  # counter-noise numbers replayed along torch noise: the log's fingerprint of the final weights catches it
        with pytest.raises(TrajectoryError, match="differ from the run's"):
            replay(base, older)
