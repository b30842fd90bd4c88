"""Run results: records reach the log folder and the driver's file; the latest record of a source wins."""

from __future__ import annotations

from types import SimpleNamespace

from zolightning.run_results import RESULTS_FILE_VARIABLE, read_results, record_result


def test_records_go_to_the_log_folder_and_the_drivers_file(tmp_path, monkeypatch):
    driver = tmp_path / "driver.jsonl"
    monkeypatch.setenv(RESULTS_FILE_VARIABLE, str(driver))
    trainer = SimpleNamespace(is_global_zero=True, log_dir=str(tmp_path / "logs"), loggers=[object()])
    record_result(trainer, "a", {"x": 1})
    record_result(trainer, "b", {"y": 2.5})
    record_result(trainer, "a", {"x": 3})
    for path in (driver, tmp_path / "logs" / "results.jsonl"):
        assert read_results(path) == {"a": {"source": "a", "x": 3}, "b": {"source": "b", "y": 2.5}}


def test_other_ranks_write_nothing(tmp_path, monkeypatch):
    driver = tmp_path / "driver.jsonl"
    monkeypatch.setenv(RESULTS_FILE_VARIABLE, str(driver))
    record_result(SimpleNamespace(is_global_zero=False, log_dir=str(tmp_path)), "a", {"x": 1})
    assert not driver.exists() and read_results(driver) == {}
