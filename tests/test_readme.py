"""The README's Python examples run as written: complete, and doing what the text says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_each_readme_example_runs_as_written(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # examples that save files write them here
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(EXAMPLES[index], f"README.md example {index}", "exec"), namespace)
    if "loss" in namespace and hasattr(namespace["loss"], "item"):
        assert float(namespace["loss"]) < 1.0  # every loop example trains its regressor (it starts near 8)
