"""``PeakMemory``: the peak memory of a fit, from its start to its end (the model's load is not counted).

On CUDA it is ``torch.cuda.max_memory_allocated`` (reset at the start of the fit). On CPU it is the process's
resident set high-water mark (``VmHWM``), which Linux lets a process reset (``/proc/self/clear_refs``); where that
is not possible (other systems), the figure is the process's lifetime peak (``ru_maxrss``) and says so.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from zolightning.callbacks.result_line import print_result
from zolightning.run_results import record_result

__all__ = ["PeakMemory"]

_MIB = 2**20


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_peak_bytes() -> int:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory(Callback):
    """Log and record the peak memory of the fit: ``memory/peak_mib`` (MiB) and :attr:`peak_bytes`.

    Args:
        verbose: print one line with the figure at the end of the fit (default ``True``).

    Attributes:
        peak_bytes: the figure, after the fit.
        kind: ``"cuda_max_allocated"``, ``"cpu_rss_since_fit_start"`` or ``"cpu_rss_lifetime"`` (what was measured).
    """

    def __init__(self, verbose: bool = True) -> None:
        self.verbose = bool(verbose)
        self.peak_bytes: int | None = None
        self.kind = ""

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
            self.kind = "cuda_max_allocated"
        else:
            self.kind = "cpu_rss_since_fit_start" if _reset_rss_peak() else "cpu_rss_lifetime"

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.kind == "cuda_max_allocated":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(pl_module.device))
        else:
            self.peak_bytes = _rss_peak_bytes()
        mib = self.peak_bytes / _MIB
        for logger in trainer.loggers:
            logger.log_metrics({"memory/peak_mib": mib}, step=trainer.global_step)
        record_result(trainer, "peak_memory", {"peak_mib": round(mib, 1), "kind": self.kind})
        if self.verbose:
            print_result(trainer, f"Peak memory ({self.kind}): {mib:,.0f} MiB")
