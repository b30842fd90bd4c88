"""The trajectory file (``.zot``): a ZO run as its base weights' fingerprint and a few bytes per step.

Pure encoding and decoding (stdlib and torch only); ``docs/trajectory-format.md`` gives the layout byte by byte:

    preamble  MAGIC (8 bytes) · format version (uint16)
    header    length (uint32) · CRC-32 (uint32) · UTF-8 JSON
    record*   length (uint32) · CRC-32 (uint32) · payload (kind byte, then a step or a weights record)

Every integer is little-endian. The file is only ever appended to, one flushed record at a time, so a crash leaves at
worst a torn last record: :func:`read_trajectory` names the step where the file stops being valid, and
:func:`valid_length` gives the byte length of the valid prefix for a writer that resumes.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

MAGIC = b"\x89ZOT\r\n\x1a\n"  # a binary signature that text-mode transfers and truncation to 7 bits would mangle
FORMAT_VERSION = 1
STEP_RECORD, WEIGHTS_RECORD = 0, 1

_U16, _U32, _FRAME = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<II")
_STEP_HEAD = struct.Struct("<qBIH")  # step, flags, micro-batches, param groups
_PLAN = struct.Struct("<iiI")  # active block, refresh index, CRC-32 of the active names
_WEIGHTS = struct.Struct("<q32s")  # updates applied, SHA-256 of the weights
DTYPES: dict[int, torch.dtype] = {0: torch.float32, 1: torch.float64, 2: torch.bfloat16, 3: torch.float16}
_CODES = {dtype: code for code, dtype in DTYPES.items()}


class TrajectoryError(ValueError):
    """A trajectory that cannot be read or replayed; the message names the step and the cause."""


@dataclass(frozen=True)
class StepRecord:
    """One update (or one skipped non-finite step) of the run.

    Attributes:
        step: the step index (the seeds derive from it; ``trainer.global_step`` before the step).
        updated: whether the update was applied (``False``: the numbers were not finite and the step was skipped).
        micro_batches: micro-batches averaged into the update (``zo.accumulate_batches``, fewer at an epoch's end).
        lr, eps: each param group's learning rate and ε as applied, float64 (exact for Python floats).
        numbers: the (directions × k) tensor the estimates were combined from, after the accumulation mean and the
            cross-rank reduce or gather, bit for bit.
        seeds: the step's direction seeds (every rank's under query parallelism), for audit and verification.
        active_block: the active block's index (``-1`` without a block selection).
        refresh: the direction rule's refresh window (``step // refresh_interval``; ``-1`` without one).
        active_crc: CRC-32 of the plan's tensor names joined by newlines.
    """

    step: int
    updated: bool
    micro_batches: int
    lr: tuple[float, ...]
    eps: tuple[float, ...]
    numbers: Tensor
    seeds: tuple[int, ...]
    active_block: int = -1
    refresh: int = -1
    active_crc: int = 0


@dataclass(frozen=True)
class WeightsRecord:
    """The fingerprint (:func:`weights_fingerprint`) of the weights after ``steps`` updates, written when the run
    saves a checkpoint or ends, so that a replay proves it reproduced them bitwise."""

    steps: int
    digest: bytes


@dataclass
class Trajectory:
    """A decoded file: its header, its step records in order, and its weights records."""

    header: dict[str, Any]
    steps: list[StepRecord] = field(default_factory=list)
    weights: list[WeightsRecord] = field(default_factory=list)


def weights_fingerprint(named: Iterable[tuple[str, Tensor]]) -> bytes:
    """SHA-256 over every tensor's name, shape, dtype and bytes, in the given order (``named_parameters()``)."""
    digest = hashlib.sha256()
    for name, tensor in named:
        data = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{tuple(data.shape)}|{data.dtype}\n".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()


def encode_preamble(header: dict[str, Any]) -> bytes:
    """Magic, format version and the framed JSON header."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + _U16.pack(FORMAT_VERSION) + _frame(text)


def encode_record(record: StepRecord | WeightsRecord) -> bytes:
    """One framed record (length, CRC-32, payload)."""
    if isinstance(record, WeightsRecord):
        return _frame(bytes([WEIGHTS_RECORD]) + _WEIGHTS.pack(record.steps, record.digest))
    if len(record.lr) != len(record.eps):
        raise ValueError(f"`lr` and `eps` need one value per param group, got {len(record.lr)} and {len(record.eps)}.")
    numbers = record.numbers.detach().contiguous().cpu()
    if numbers.dtype not in _CODES or numbers.dim() > 255:
        raise ValueError(f"`numbers` must be a float tensor of {sorted(map(str, _CODES))}, got {numbers.dtype}.")
    groups = len(record.lr)
    parts = [
        bytes([STEP_RECORD]),
        _STEP_HEAD.pack(record.step, int(record.updated), record.micro_batches, groups),
        struct.pack(f"<{2 * groups}d", *record.lr, *record.eps),
        _PLAN.pack(record.active_block, record.refresh, record.active_crc),
        _U16.pack(len(record.seeds)), struct.pack(f"<{len(record.seeds)}Q", *record.seeds),
        bytes([_CODES[numbers.dtype], numbers.dim()]), struct.pack(f"<{numbers.dim()}I", *numbers.shape),
        numbers.reshape(-1).view(torch.uint8).numpy().tobytes(),
    ]
    return _frame(b"".join(parts))


def read_trajectory(path: str | Path) -> Trajectory:
    """Decode a whole file, checking every CRC.

    Raises:
        TrajectoryError: not a trajectory, written by a newer format version, a corrupted header, or a record that is
            torn (truncated) or corrupted: the message names the step where the file breaks.
    """
    data = Path(path).read_bytes()
    header, offset = _decode_preamble(data, path)
    trajectory = Trajectory(header)
    while offset < len(data):
        expected = trajectory.steps[-1].step + 1 if trajectory.steps else 0
        payload, offset, problem = _next_frame(data, offset)
        if problem is not None:
            raise TrajectoryError(f"{path}: {problem} at step {expected} (after {len(trajectory.steps)} valid records).")
        record = _decode_payload(payload, expected, path)
        (trajectory.weights if isinstance(record, WeightsRecord) else trajectory.steps).append(record)
    return trajectory


def valid_length(path: str | Path, step_records: int) -> int:
    """The byte length of the header, the first ``step_records`` step records and the weights records among and
    right after them: where a resumed writer cuts the file before appending. Raises if fewer valid step records
    exist."""
    data = Path(path).read_bytes()
    _, offset = _decode_preamble(data, path)
    kept = 0
    while kept < step_records:
        payload, end, problem = _next_frame(data, offset)
        if problem is not None:
            raise TrajectoryError(f"{path}: {problem} in record {kept}; it holds {kept} valid step records, "
                                  f"the checkpoint expects {step_records}.")
        kept += payload[0] == STEP_RECORD
        offset = end
    # The weights fingerprint written with the checkpoint (right after its last step record) stays.
    payload, end, problem = _next_frame(data, offset)
    while problem is None and payload[0] == WEIGHTS_RECORD:
        offset = end
        payload, end, problem = _next_frame(data, offset)
    return offset


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _next_frame(data: bytes, offset: int) -> tuple[bytes, int, str | None]:
    """The payload at ``offset``, the offset after it, and what is wrong with it (``None`` if valid)."""
    if offset + _FRAME.size > len(data):
        return b"", offset, "truncated (a torn record frame)"
    length, crc = _FRAME.unpack_from(data, offset)
    start, end = offset + _FRAME.size, offset + _FRAME.size + length
    if end > len(data):
        return b"", offset, f"truncated ({len(data) - start} of {length} payload bytes)"
    payload = data[start:end]
    if zlib.crc32(payload) != crc or not payload:
        return b"", offset, "corrupted (CRC-32 mismatch)"
    return payload, end, None


def _decode_preamble(data: bytes, path: str | Path) -> tuple[dict[str, Any], int]:
    if not data.startswith(MAGIC):
        raise TrajectoryError(f"{path} is not a zolightning trajectory (no .zot signature).")
    if len(data) < len(MAGIC) + _U16.size:
        raise TrajectoryError(f"{path}: truncated before the format version.")
    (version,) = _U16.unpack_from(data, len(MAGIC))
    if version > FORMAT_VERSION:
        raise TrajectoryError(
            f"{path} was written in trajectory format version {version}, newer than this zolightning reads "
            f"(version {FORMAT_VERSION}): upgrade zolightning to replay it."
        )
    payload, offset, problem = _next_frame(data, len(MAGIC) + _U16.size)
    if problem is not None:
        raise TrajectoryError(f"{path}: the header is {problem}.")
    return json.loads(payload.decode()), offset


def _decode_payload(payload: bytes, expected: int, path: str | Path) -> StepRecord | WeightsRecord:
    try:
        if payload[0] == WEIGHTS_RECORD:
            steps, digest = _WEIGHTS.unpack_from(payload, 1)
            return WeightsRecord(steps, digest)
        if payload[0] != STEP_RECORD:
            raise ValueError(f"unknown record kind {payload[0]}")
        offset = 1
        step, flags, micro_batches, groups = _STEP_HEAD.unpack_from(payload, offset)
        offset += _STEP_HEAD.size
        rates = struct.unpack_from(f"<{2 * groups}d", payload, offset)
        offset += 16 * groups
        active_block, refresh, active_crc = _PLAN.unpack_from(payload, offset)
        offset += _PLAN.size
        (count,) = _U16.unpack_from(payload, offset)
        seeds = struct.unpack_from(f"<{count}Q", payload, offset + _U16.size)
        offset += _U16.size + 8 * count
        code, ndim = payload[offset], payload[offset + 1]
        shape = struct.unpack_from(f"<{ndim}I", payload, offset + 2)
        raw = bytearray(payload[offset + 2 + 4 * ndim :])
        numbers = torch.frombuffer(raw, dtype=torch.uint8).view(DTYPES[code]).reshape(shape)
    except (struct.error, IndexError, KeyError, RuntimeError, ValueError) as error:
        raise TrajectoryError(f"{path}: the record at step {expected} cannot be decoded ({error}).") from None
    if step != expected:
        raise TrajectoryError(f"{path}: the record after step {expected - 1} holds step {step}; steps must follow on.")
    return StepRecord(
        step, bool(flags & 1), micro_batches, rates[:groups], rates[groups:], numbers, seeds,
        active_block, refresh, active_crc,
    )
