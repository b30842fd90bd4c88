"""``TrajectoryWriter``: appends records to a trajectory file, one flushed record at a time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from zolightning.trajectory.format import (
    StepRecord,
    TrajectoryError,
    WeightsRecord,
    encode_preamble,
    encode_record,
    valid_length,
)


class TrajectoryWriter:
    """An open trajectory file; use :meth:`create` for a new run and :meth:`resume` for a resumed one.

    Every :meth:`write` appends one record and flushes it to the operating system, so a crashed process loses at
    most the record it was writing (readers then report the file as truncated at that step); :meth:`sync` also
    forces it to disk (``fsync``), which the trajectory callback does at each checkpoint and at the end of the fit.

    Attributes:
        path: the file.
        step_records: step records in the file (the next record's step, for a run that started at step 0).
    """

    def __init__(self, path: Path, step_records: int) -> None:
        self.path = path
        self.step_records = step_records
        self._file = open(path, "ab", buffering=1 << 16)

    @classmethod
    def create(cls, path: str | Path, header: dict[str, Any]) -> TrajectoryWriter:
        """Start a new file at ``path`` (replacing one that exists) with ``header``, synced to disk."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as file:
            file.write(encode_preamble(header))
            file.flush()
            os.fsync(file.fileno())
        return cls(path, 0)

    @classmethod
    def resume(cls, source: str | Path, step_records: int, path: str | Path | None = None) -> TrajectoryWriter:
        """Continue the run logged in ``source`` after its first ``step_records`` step records (a checkpoint's): the
        records beyond them (and a torn tail) are cut. With ``path`` other than ``source`` the run branches: that
        prefix is copied to ``path`` and ``source`` is left untouched.

        Raises:
            TrajectoryError: ``source`` holds fewer valid step records than ``step_records``.
        """
        source = Path(source)
        if not source.is_file():
            raise TrajectoryError(f"The checkpoint's trajectory {source} does not exist; pass `path=` for a new log.")
        keep = valid_length(source, step_records)
        target = source if path is None else Path(path)
        if target.resolve() != source.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        with open(target, "r+b") as file:
            file.truncate(keep)
            file.flush()
            os.fsync(file.fileno())
        return cls(target, step_records)

    def write(self, record: StepRecord | WeightsRecord) -> None:
        """Append ``record`` and flush it."""
        self._file.write(encode_record(record))
        self._file.flush()
        if isinstance(record, StepRecord):
            self.step_records += 1

    def sync(self) -> None:
        """Force what was written to disk."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()

