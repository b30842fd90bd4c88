"""The two commands of the README: `make demo` and `make test` install into a project-local virtual environment."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(target: str, **env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | env
    out = subprocess.run(["make", "-n", "-C", str(ROOT), target], env=environment, capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if line and not line.startswith("make")]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_without_an_active_environment_everything_goes_into_a_project_venv():
    lines = dry_run("test")
    if not (ROOT / ".venv").exists():  # made once; `make` skips the step when it is there
        assert lines[0] == "python3 -m venv .venv"
    installs = [line for line in lines if " install " in line]
    assert installs and all(line.startswith(".venv/bin/python") or ".venv/bin/python -m pip" in line for line in installs)
    # A torch already in the environment is kept: the pinned wheel is installed only when `import torch` fails.
    assert any('-c "import torch"' in line and "|| .venv/bin/python -m pip install -q torch==2.13.0" in line for line in lines)
    assert lines[-1] == ".venv/bin/python -m pytest -q"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_an_active_environment_is_used_as_it_is(tmp_path):
    lines = dry_run("demo", VIRTUAL_ENV=str(tmp_path / "env"))
    assert lines[-1] == f"{tmp_path}/env/bin/python train.py fit"
    assert not any(".venv" in line for line in lines)
