"""Shared test helpers: quiet, fast Trainer settings and small models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

# The test models are tiny: a second thread buys nothing, and with ddp_spawn ranks (or anything else) sharing the
# cores, OpenMP threads waiting on each other make small ops up to 50x slower.
torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*litlogger.*")


def trainer_kwargs(**overrides: Any) -> dict[str, Any]:
    """Trainer arguments for tests: CPU, no progress bar, no model summary, no logger or checkpoints unless asked."""
    kwargs: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def quadratic() -> tuple[torch.Tensor, torch.Tensor]:
    """A well-conditioned SPD matrix A (20×20) and a starting point x0 for f(x) = ½ xᵀAx (minimum 0 at x = 0)."""
    generator = torch.Generator().manual_seed(0)
    basis = torch.randn(20, 20, generator=generator)
    matrix = basis @ basis.T / 20 + torch.eye(20)
    return matrix, torch.randn(20, generator=generator)


def count_noise_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every noise pass over a dense direction from now on: a z drawn into a buffer
    (``fill_noise_``, torch or counter) or generated inside a fused move or update (counter noise). Returns the list
    the sizes are appended to, in elements."""
    import zolightning.functional.directions as directions

    passes: list[int] = []
    for name in ("fill_noise_", "add_counter_noise_", "counter_sgd_update_"):
        original = getattr(directions, name)

        def counted(tensor, *args, _original=original, **kwargs):
            passes.append(tensor.numel())
            return _original(tensor, *args, **kwargs)

        monkeypatch.setattr(directions, name, counted)
    return passes


REPO = Path(__file__).resolve().parents[1]
SCRIPT_TIMEOUT = 300  # seconds; a healthy run of a launch script takes well under a minute


def run_script(script: str, folder: Path) -> Path:
    """Run ``tests/<script> <folder>`` in a subprocess (Lightning's ``ddp`` and ``ModelParallelStrategy`` launch rank 1
    by re-running the launching script, so they cannot run inside pytest) and return ``folder``, where it wrote its
    records; fail with the end of its output if it fails or outlasts :data:`SCRIPT_TIMEOUT`."""
    command = [sys.executable, str(REPO / "tests" / script), str(folder)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the script's session: rank 0 and the rank it launched
        output, _ = process.communicate()
        pytest.fail(f"tests/{script} did not finish in {SCRIPT_TIMEOUT} s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]
    return folder


@pytest.fixture(scope="session")
def ddp_script_records(tmp_path_factory) -> Path:
    """The records of ``tests/ddp_script.py`` (``strategy="ddp"``, 2 processes, every case in one launch), shared by
    the DDP and the sharded tests."""
    return run_script("ddp_script.py", tmp_path_factory.mktemp("ddp-script"))
