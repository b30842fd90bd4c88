"""Shared pieces of the benchmarks: models built from configs (no weights needed), batches, timing and reports."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def opt_125m_shaped() -> torch.nn.Module:
    """OPT-125m's architecture (12 layers, hidden 768, FFN 3072, vocab 50272), random init, fp32."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    return OPTForCausalLM(OPTConfig()).eval()


def token_batch(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def lm_loss(model: torch.nn.Module, tokens: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Causal-LM loss of ``model`` on ``tokens``, as a closure."""
    return lambda: model(input_ids=tokens, labels=tokens).loss


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


class Timer:
    """Collects per-variant samples of (total, forward) seconds over interleaved repeats."""

    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[float, float]]] = {}

    def run(self, name: str, step: Callable[[], float]) -> None:
        """``step`` runs one step and returns its forward seconds; the total is timed here."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        forward = step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.samples.setdefault(name, []).append((time.perf_counter() - started, forward))

    def summary(self, floor: str, reference: str | None = None) -> dict[str, dict[str, float]]:
        out = {}
        floor_median = statistics.median(t for t, _ in self.samples[floor])
        reference_median = statistics.median(t for t, _ in self.samples[reference]) if reference else None
        for name, samples in self.samples.items():
            total = statistics.median(t for t, _ in samples)
            forward = statistics.median(f for _, f in samples)
            out[name] = {
                "median_s": total,
                "forward_s": forward,
                "perturb_update_s": total - forward,
                "vs_floor": total / floor_median,
                **({"speedup_vs_reference": reference_median / total} if reference_median else {}),
                "repeats": len(samples),
            }
        return out


def write_report(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def table(summary: dict[str, dict[str, float]]) -> str:
    lines = ["| variant | step (s) | forward (s) | perturb+update (s) | × floor | speed-up vs MeZO ref |", "|---|---|---|---|---|---|"]
    for name, row in summary.items():
        speedup = row.get("speedup_vs_reference")
        lines.append(
            f"| {name} | {row['median_s']:.3f} | {row['forward_s']:.3f} | {row['perturb_update_s']:.3f} | "
            f"{row['vs_floor']:.2f} | {'' if speedup is None else f'{speedup:.2f}×'} |"
        )
    return "\n".join(lines)
