"""The ``.zot`` format: exact round trips, and refusal of truncated, corrupted, newer or foreign files."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from zolightning.trajectory import FORMAT_VERSION, StepRecord, TrajectoryError, TrajectoryWriter, WeightsRecord
from zolightning.trajectory import read_trajectory, weights_fingerprint
from zolightning.trajectory.format import MAGIC, encode_preamble, encode_record, valid_length

HEADER = {"base_fingerprint": "00", "zo": {"seed": 3}}


def record(step: int, directions: int = 1) -> StepRecord:
    numbers = torch.tensor([[1.0 / 3, float("nan")]] * directions) * (step + 1)
    return StepRecord(step, True, 2, (1e-3, 0.1), (1e-3, 1e-2), numbers, tuple(range(directions)), 4, -1, 0xDEADBEEF)


def write(path: Path, steps: int, directions: int = 1) -> list[int]:
    """A log of ``steps`` records; returns the byte offset where each record starts."""
    writer = TrajectoryWriter.create(path, HEADER)
    starts = []
    for step in range(steps):
        starts.append(path.stat().st_size)
        writer.write(record(step, directions))
    writer.write(WeightsRecord(steps, b"\x01" * 32))
    writer.close()
    return starts


def test_records_round_trip_bit_for_bit(tmp_path):
    write(tmp_path / "a.zot", 3, directions=2)
    trajectory = read_trajectory(tmp_path / "a.zot")
    assert trajectory.header == HEADER
    assert [r.step for r in trajectory.steps] == [0, 1, 2]
    for read, written in zip(trajectory.steps, [record(s, 2) for s in range(3)], strict=True):
        # The numbers come back bit for bit (NaN included), and every float64 lr and ε exactly.
        assert torch.equal(read.numbers.view(torch.int32), written.numbers.view(torch.int32))
        assert read.numbers.shape == (2, 2) and read.numbers.dtype == torch.float32
        assert (read.lr, read.eps, read.seeds, read.micro_batches) == (written.lr, written.eps, (0, 1), 2)
        assert (read.active_block, read.refresh, read.active_crc, read.updated) == (4, -1, 0xDEADBEEF, True)
    assert trajectory.weights == [WeightsRecord(3, b"\x01" * 32)]


def test_a_step_record_of_one_direction_and_two_groups_takes_under_a_hundred_bytes():
    assert len(encode_record(record(0))) < 100


def test_a_flipped_byte_in_a_record_is_refused_naming_its_step(tmp_path):
    path = tmp_path / "a.zot"
    starts = write(path, 5)
    data = bytearray(path.read_bytes())
    data[starts[3] + 20] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(TrajectoryError, match=r"corrupted .* at step 3 \(after 3 valid records\)"):
        read_trajectory(path)


@pytest.mark.parametrize("cut", [3, 30], ids=["torn-frame", "torn-payload"])
def test_a_log_cut_mid_record_is_refused_as_truncated_at_that_step(tmp_path, cut):
    path = tmp_path / "a.zot"
    starts = write(path, 5)
    path.write_bytes(path.read_bytes()[: starts[4] + cut])
    with pytest.raises(TrajectoryError, match=r"truncated .* at step 4"):
        read_trajectory(path)


def test_a_corrupted_header_is_refused(tmp_path):
    path = tmp_path / "a.zot"
    write(path, 1)
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 2 + 8 + 3] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(TrajectoryError, match="header is corrupted"):
        read_trajectory(path)


def test_a_newer_format_version_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "a.zot"
    preamble = encode_preamble(HEADER)
    newer = MAGIC + struct.pack("<H", FORMAT_VERSION + 1) + preamble[len(MAGIC) + 2 :]
    path.write_bytes(newer + encode_record(record(0)))
    with pytest.raises(TrajectoryError, match=rf"format version {FORMAT_VERSION + 1}, newer .* upgrade zolightning"):
        read_trajectory(path)


def test_a_file_that_is_not_a_trajectory_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(TrajectoryError, match="not a zolightning trajectory"):
        read_trajectory(path)


def test_resuming_cuts_later_records_and_a_torn_tail_and_branching_leaves_the_source(tmp_path):
    path = tmp_path / "a.zot"
    starts = write(path, 5)
    with open(path, "ab") as file:
        file.write(b"\x07\x00")  # a torn frame, as a crash would leave
    branch = TrajectoryWriter.resume(path, 3, tmp_path / "branch.zot")
    branch.write(record(3))
    branch.close()
    assert [r.step for r in read_trajectory(tmp_path / "branch.zot").steps] == [0, 1, 2, 3]
    assert path.stat().st_size == starts[4] + len(encode_record(record(4))) + 32 + 9 + 8 + 2  # untouched
    writer = TrajectoryWriter.resume(path, 2)
    assert writer.step_records == 2 and path.stat().st_size == starts[2]
    writer.close()
    with pytest.raises(TrajectoryError, match="holds 2 valid step records, the checkpoint expects 3"):
        valid_length(path, 3)


def test_the_fingerprint_covers_names_shapes_dtypes_and_bytes():
    weights = [("a", torch.arange(6.0).reshape(2, 3)), ("b", torch.zeros(2))]
    digest = weights_fingerprint(weights)
    assert digest == weights_fingerprint([(n, t.clone()) for n, t in weights])
    assert digest != weights_fingerprint([("c", weights[0][1]), weights[1]])
    assert digest != weights_fingerprint([("a", weights[0][1].reshape(3, 2)), weights[1]])
    assert digest != weights_fingerprint([("a", weights[0][1].double()), weights[1]])
    nudged = weights[0][1].clone()
    nudged[1, 2] = torch.nextafter(nudged[1, 2], torch.tensor(10.0))
    assert digest != weights_fingerprint([("a", nudged), weights[1]])
