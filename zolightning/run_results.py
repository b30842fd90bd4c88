"""Where a run's final figures go, so that a driver (:mod:`zolightning.multi_seed`) can collect them.

A callback that produces a final figure (the selected checkpoint's test score, the peak memory) calls
:func:`record_result`. The record is written as one JSON line to the run's log folder (``results.jsonl``, when the
run has a logger) and, when
the environment variable ``ZOLIGHTNING_RESULTS_FILE`` names a file, appended there too: that is how the multi-seed
driver, which starts each seed as its own process, gets every seed's figures without parsing its output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_FILE_VARIABLE", "read_results", "record_result"]

RESULTS_FILE_VARIABLE = "ZOLIGHTNING_RESULTS_FILE"


def _append(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def record_result(trainer: Any, source: str, values: dict[str, Any]) -> dict[str, Any]:
    """Write ``{"source": source, **values}`` (global rank 0 only) and return it."""
    record = {"source": source, **values}
    if getattr(trainer, "is_global_zero", True):
        log_dir = getattr(trainer, "log_dir", None) if getattr(trainer, "loggers", [None]) else None
        if log_dir:
            _append(Path(log_dir) / "results.jsonl", record)
        target = os.environ.get(RESULTS_FILE_VARIABLE)
        if target:
            _append(Path(target), record)
    return record


def read_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """The records of a results file by source (a later record of the same source wins)."""
    records: dict[str, dict[str, Any]] = {}
    file = Path(path)
    if not file.is_file():
        return records
    for line in file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            records[record.get("source", "?")] = record
    return records
