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

# ZOL_BENCH_RESULTS redirects the reports, e.g. when the scripts run from a snapshot of the sources (see README).
RESULTS = Path(os.environ.get("ZOL_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def opt_125m_shaped() -> torch.nn.Module:
    """OPT-125m's architecture (12 layers, hidden 768, FFN 3072, vocab 50272), random init, fp32."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    return OPTForCausalLM(OPTConfig()).eval()


def opt_1_3b_shaped() -> torch.nn.Module:
    """OPT-1.3B's architecture (24 layers, hidden 2048, 32 heads, FFN 8192, vocab 50272), random init, fp32: for the
    GPU checks (about 5.3 GB in fp32)."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    config = OPTConfig(hidden_size=2048, num_hidden_layers=24, ffn_dim=8192, num_attention_heads=32,
                       word_embed_proj_dim=2048)
    return OPTForCausalLM(config).eval()


def smollm2_135m_shaped() -> torch.nn.Module:
    """SmolLM2-135M's architecture (Llama: 30 layers, hidden 576, 9 heads / 3 KV heads, FFN 1536, vocab 49152, tied
    embeddings, 8192 positions, RMSNorm eps 1e-5, RoPE θ 1e5), random init, fp32: 134.5M parameters."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=576,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        vocab_size=49152,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


# --model choices of the benchmarks: name -> (builder, description written into the reports)
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], str]] = {
    "opt-125m": (opt_125m_shaped, "OPT-125m-shaped (random init)"),
    "smollm2-135m": (smollm2_135m_shaped, "SmolLM2-135M-shaped (Llama config, random init)"),
    "opt-1.3b": (opt_1_3b_shaped, "OPT-1.3B-shaped (random init)"),
}


def build_model(name: str) -> torch.nn.Module:
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name][0]()


def token_batch(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def lm_loss(model: torch.nn.Module, tokens: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Causal-LM loss of ``model`` on ``tokens``, as a closure."""
    return lambda: model(input_ids=tokens, labels=tokens).loss


STRUCTURES = ("dense", "bcd-layer", "sparse-random-0.75", "lozo-r2", "subzero-r24")


def make_structure(name: str, model: torch.nn.Module) -> tuple[list[Any], str]:
    """The perturbation rules the benchmarks compare, by name, with the ``zo.restore`` they run under:

    ``dense`` (MeZO), ``bcd-layer`` (MeZO-BCD: one layer per step, cyclic, snapshot restore; ``bcd-layer-arithmetic``
    restores by −εz instead),
    ``sparse-random-0.75`` (a quarter of each tensor, random masks refreshed every 100 steps), ``lozo-r2`` (rank 2,
    V refreshed every 50 steps) and ``subzero-r24`` (rank 24, U and V refreshed every 1000 steps)."""
    from zolightning.structures import BlockSelection, LowRankDirections, SparseDirections

    if name == "dense":
        return [], "auto"
    if name.startswith("bcd-"):
        # "bcd-layer" restores from a snapshot of the active block (zo.restore: auto under a block selection);
        # "bcd-layer-arithmetic" restores by subtracting εz instead.
        granularity, _, restore = name.removeprefix("bcd-").partition("-")
        return [BlockSelection(granularity)], "arithmetic" if restore else "auto"
    if name == "sparse-random-0.75":
        return [SparseDirections(0.75, "random", refresh_interval=100)], "auto"
    if name == "lozo-r2":
        return [LowRankDirections(2, 50, "lozo")], "auto"
    if name == "subzero-r24":
        return [LowRankDirections(24, 1000, "subzero")], "auto"
    raise ValueError(f"unknown structure {name!r}; choose from {STRUCTURES}")


def attach_structure(name: str, model: torch.nn.Module, optimizer: Any) -> Any:
    """Give ``optimizer`` a step engine with the structure ``name`` installed (see :func:`make_structure`)."""
    from zolightning import StepEngine, ZOConfig

    rules, restore = make_structure(name, model)
    engine = StepEngine(ZOConfig(restore=restore), module=model)
    for rule in rules:
        engine.install(rule)
    optimizer.use_engine(engine)
    return engine


def two_forwards(loss_fn: Callable[[], torch.Tensor]) -> Callable[[], float]:
    """The floor of a ZO step: two plain ``no_grad`` forwards; returns their wall time in seconds."""

    def floor() -> float:
        tick = time.perf_counter()
        with torch.no_grad():
            loss_fn()
            loss_fn()
        return time.perf_counter() - tick

    return floor


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def source_info() -> dict[str, Any]:
    """Which zolightning sources were measured: their path, the git commit and any uncommitted changes to them
    (or, for an exported snapshot, the commit recorded in its ``.snapshot_commit`` file)."""
    import subprocess

    import zolightning

    root = Path(zolightning.__file__).resolve().parent.parent
    info: dict[str, Any] = {"path": str(root)}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is not None:
        info["commit"] = commit
        info["uncommitted_changes"] = (git("status", "--porcelain", "--", "zolightning", "callbacks") or "").splitlines()
    elif (root / ".snapshot_commit").exists():
        info["commit"] = (root / ".snapshot_commit").read_text().strip()
        info["snapshot"] = True
    return info


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class Contention:
    """How much of the machine other processes used while a sample ran: their CPU seconds (all CPUs busy time
    minus this process's own user + system time) over the sample's wall time × cores, in [0, 1]."""

    def __enter__(self) -> Contention:
        self.jiffies, self.times, self.wall = _cpu_jiffies(), os.times(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        after, times, wall = _cpu_jiffies(), os.times(), time.perf_counter()
        self.others: float | None = None
        if self.jiffies is None or after is None:
            return
        hz = os.sysconf("SC_CLK_TCK")
        busy = (after[0] - self.jiffies[0]) / hz
        own = (times.user - self.times.user) + (times.system - self.times.system)
        self.others = max(0.0, min(1.0, (busy - own) / ((wall - self.wall) * (os.cpu_count() or 1))))


class Timer:
    """Collects per-variant samples of (total, forward) seconds over interleaved repeats, each with the share of the
    machine other processes used meanwhile (:class:`Contention`)."""

    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self.others: dict[str, list[float | None]] = {}

    def run(self, name: str, step: Callable[[], float], steps: int = 1) -> None:
        """``step`` runs ``steps`` steps (default one) and returns their forward seconds; the total is timed here, and
        the sample is the mean per step (a whole BCD cycle, say, so that every block's turn counts)."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        with Contention() as contention:
            started = time.perf_counter()
            forward = step()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            total = time.perf_counter() - started
        self.samples.setdefault(name, []).append((total / steps, forward / steps))
        self.others.setdefault(name, []).append(contention.others)

    QUIET = 0.15  # a sample is "quiet" when other processes used less than this share of the machine

    def quiet_median(self, name: str) -> float | None:
        """Median total seconds of ``name`` over its quiet samples, or None when it has none."""
        quiet = [t for (t, _), o in zip(self.samples[name], self.others.get(name, [])) if o is not None and o < self.QUIET]
        return statistics.median(quiet) if quiet else None

    def summary(self, floor: str, reference: str | None = None) -> dict[str, dict[str, float]]:
        out = {}
        floor_quiet = self.quiet_median(floor)
        floor_median = statistics.median(t for t, _ in self.samples[floor])
        reference_median = statistics.median(t for t, _ in self.samples[reference]) if reference else None
        for name, samples in self.samples.items():
            total = statistics.median(t for t, _ in samples)
            forward = statistics.median(f for _, f in samples)
            others = [o for o in self.others.get(name, []) if o is not None]
            out[name] = {
                "median_s": total,
                "forward_s": forward,
                "perturb_update_s": total - forward,
                "vs_floor": total / floor_median,
                **({"speedup_vs_reference": reference_median / total} if reference_median else {}),
                "repeats": len(samples),
                "samples_total_s": [round(t, 4) for t, _ in samples],
                "samples_forward_s": [round(f, 4) for _, f in samples],
                "others_cpu_share": [round(o, 3) for o in others],
            }
            quiet = self.quiet_median(name)
            if quiet is not None:
                out[name]["quiet_median_s"] = quiet
                out[name]["quiet_repeats"] = sum(1 for o in others if o < self.QUIET)
                if floor_quiet is not None:
                    out[name]["quiet_vs_floor"] = quiet / floor_quiet
        return out


def write_report(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def read_report(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or ``None`` (with a note) when matplotlib is missing:
    plots are optional (``pip install -e .[bench]``), the JSON reports are not."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install -e .[bench]): no plot written")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plot(plt: Any, fig: Any, ax: Any, name: str, rotation: int = 0, labelsize: int = 8) -> Path:
    """Slant the x labels by ``rotation`` degrees (right-aligned), lay out, write ``results/<name>.png`` and close."""
    if rotation:
        ax.tick_params(axis="x", labelrotation=rotation, labelsize=labelsize)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.tight_layout()
    path = RESULTS / f"{name}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot written to {path}")
    return path


def table(summary: dict[str, dict[str, float]]) -> str:
    lines = [
        "| variant | step (s) | forward (s) | perturb+update (s) | × floor | speed-up vs MeZO ref | others' CPU share | "
        "quiet × floor (n) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        speedup = row.get("speedup_vs_reference")
        others = row.get("others_cpu_share") or []
        quiet = "" if row.get("quiet_vs_floor") is None else f"{row['quiet_vs_floor']:.2f} ({row['quiet_repeats']})"
        lines.append(
            f"| {name} | {row['median_s']:.3f} | {row['forward_s']:.3f} | {row['perturb_update_s']:.3f} | "
            f"{row['vs_floor']:.2f} | {'' if speedup is None else f'{speedup:.2f}×'} | "
            f"{statistics.median(others) if others else float('nan'):.2f} | {quiet} |"
        )
    return "\n".join(lines)
