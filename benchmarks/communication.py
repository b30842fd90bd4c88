"""Bytes communicated per training step under DDP: ZO (default and query-parallel) against backprop.

Every variant is a real Lightning fit with ``strategy="ddp_spawn"``, ``devices=2``, ``accelerator="cpu"`` (gloo):

- ``zo``: a :class:`~zolightning.ZOLightningModule` (ZO-SGD, one direction): the ranks average their (L+, L−);
- ``zo-query-parallel-q1`` / ``-q4``: ``query_parallel=True`` with q = 1 or 4 directions per rank: the ranks
  all-gather their per-direction values (a (q, 4) float32 tensor at the time of writing);
- ``backprop``: a plain ``LightningModule`` with Adam: DDP all-reduces the gradient buckets.

The bytes are counted where they are handed to torch.distributed, in the spawned workers: a callback's ``setup``
wraps ``all_reduce``, ``all_gather``, ``all_gather_into_tensor``, ``all_gather_object``, ``broadcast``,
``broadcast_object_list``, ``reduce_scatter(_tensor)``, ``barrier`` and DDP's internal ``_broadcast_coalesced``
(the initial parameter broadcast) and ``_verify_params_across_processes``; DDP's gradient all-reduce runs in C++,
so for it the callback registers a DDP communication hook that records each bucket's size and then runs the
default all-reduce hook. A nested call (``all_gather_object`` calling ``all_gather``) is counted once, at the
outermost call. Figures are payload bytes per rank (the tensor each rank hands to the collective, pickled size
for ``*_object*``); the bytes on the wire depend on the algorithm (ring all-reduce: 2(W−1)/W × payload per rank).

Traffic is split by phase: ``setup`` (everything before the first ``on_train_batch_start``: process-group checks,
DDP's parameter broadcast), each step (``on_train_batch_start`` → ``on_train_batch_end``), ``between steps``
and ``teardown``. The per-step figure is the median over steps.

    python -m benchmarks.communication                     # OPT-125m-shaped, 2 ranks × batch 2 × 32, 3 steps
    python -m benchmarks.communication --model smollm2-135m --variants zo,backprop
    python -m benchmarks.communication --plot-only

Writes ``results/communication.json`` (``communication_<model>.json`` for other models) and a PNG.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from zolightning import ZOLightningModule

WRAPPED = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "broadcast",
    "broadcast_object_list",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "gather",
    "scatter",
    "all_to_all",
    "barrier",
    "_broadcast_coalesced",
    "_verify_params_across_processes",
)
HOOK_OP = "ddp gradient buckets (comm hook → all_reduce)"

# ------------------------------------------------------------------------------------------- counting, per worker

_depth = threading.local()
_state: dict[str, Any] = {"phase": "setup", "counts": {}}


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return 0


def _payload(op: str, args: tuple, kwargs: dict) -> tuple[int, str]:
    """Bytes this rank hands to the collective, and a short description of the payload."""
    if op in ("all_reduce", "broadcast", "reduce", "gather", "scatter"):
        tensor = args[0] if args else kwargs.get("tensor")
    elif op == "all_gather":
        tensor = args[1] if len(args) > 1 else kwargs.get("tensor")
    elif op in ("all_gather_into_tensor", "reduce_scatter_tensor"):
        tensor = args[1] if len(args) > 1 else kwargs.get("input_tensor", kwargs.get("input"))
    elif op == "reduce_scatter":
        inputs = args[1] if len(args) > 1 else kwargs.get("input_list", [])
        return sum(_tensor_bytes(t) for t in inputs), f"{len(inputs)} tensors"
    elif op == "all_to_all":
        inputs = args[1] if len(args) > 1 else kwargs.get("input_tensor_list", [])
        return sum(_tensor_bytes(t) for t in inputs), f"{len(inputs)} tensors"
    elif op == "all_gather_object":
        obj = args[1] if len(args) > 1 else kwargs.get("obj")
        return len(pickle.dumps(obj)), f"object {type(obj).__name__}"
    elif op == "broadcast_object_list":
        objects = args[0] if args else kwargs.get("object_list", [])
        return len(pickle.dumps(list(objects))), f"{len(objects)} objects"
    elif op == "_broadcast_coalesced":
        tensors = args[1] if len(args) > 1 else kwargs.get("tensors", [])
        return sum(_tensor_bytes(t) for t in tensors), f"{len(tensors)} tensors"
    elif op == "_verify_params_across_processes":
        tensors = args[1] if len(args) > 1 else []
        return 0, f"metadata of {len(tensors)} tensors (bytes not visible)"
    else:  # barrier
        return 0, "-"
    if not isinstance(tensor, torch.Tensor):
        return 0, "?"
    return _tensor_bytes(tensor), f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}"


def _record(op: str, nbytes: int, what: str) -> None:
    phase = _state["counts"].setdefault(_state["phase"], {})
    entry = phase.setdefault(op, {"calls": 0, "bytes": 0, "payloads": []})
    entry["calls"] += 1
    entry["bytes"] += nbytes
    if what not in entry["payloads"] and len(entry["payloads"]) < 8:
        entry["payloads"].append(what)


def _counting(op: str, original: Callable) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_depth, "value", 0)
        if depth == 0:
            nbytes, what = _payload(op, args, kwargs)
            _record(op, nbytes, what)
        _depth.value = depth + 1
        try:
            return original(*args, **kwargs)
        finally:
            _depth.value = depth

    wrapper._zol_counting = True  # type: ignore[attr-defined]
    return wrapper


def counting_comm_hook(state, bucket):  # noqa: ANN001, ANN201 (DDP checks real annotations; postponed ones fail)
    """DDP communication hook: record the bucket's size, then the default all-reduce (not counted again)."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    buffer = bucket.buffer()
    _record(HOOK_OP, _tensor_bytes(buffer), f"bucket of {buffer.numel()} × {str(buffer.dtype).removeprefix('torch.')}")
    depth = getattr(_depth, "value", 0)
    _depth.value = depth + 1
    try:
        return default_hooks.allreduce_hook(state, bucket)
    finally:
        _depth.value = depth


class CountCollectives(Callback):
    """Wraps torch.distributed's collectives in each (spawned) worker at ``setup``; writes ``rank<r>.json`` to
    ``out_dir`` at ``teardown``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.step = 0
        self.originals: dict[tuple[Any, str], Callable] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        _state["phase"], _state["counts"] = "setup", {}
        from torch.distributed import distributed_c10d

        for module in (dist, distributed_c10d):
            for op in WRAPPED:
                original = getattr(module, op, None)
                if original is not None and not getattr(original, "_zol_counting", False):
                    self.originals[(module, op)] = original
                    setattr(module, op, _counting(op, original))

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        model = trainer.strategy.model
        if isinstance(model, torch.nn.parallel.DistributedDataParallel) and pl_module.automatic_optimization:
            model.register_comm_hook(None, counting_comm_hook)  # Lightning registers hooks on CUDA only

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        _state["phase"] = f"step {self.step}"
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        _state["counts"].setdefault(_state["phase"], {})["_seconds"] = time.perf_counter() - self.started
        self.step += 1
        _state["phase"] = "between steps"

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        _state["phase"] = "teardown"

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for (module, op), original in self.originals.items():
            setattr(module, op, original)
        Path(self.out_dir, f"rank{trainer.global_rank}.json").write_text(
            json.dumps({"rank": trainer.global_rank, "world_size": trainer.world_size, "counts": _state["counts"]})
        )


# ------------------------------------------------------------------------------------------- the two modules


def _model(name: str) -> torch.nn.Module:
    from benchmarks.common import build_model

    return build_model(name)  # seeded: the same weights on every rank


class ZOModule(ZOLightningModule):
    def __init__(self, model_name: str, zo: dict[str, Any]) -> None:
        super().__init__(zo=zo)
        self.model_name = model_name
        self.model: torch.nn.Module | None = None

    def configure_model(self) -> None:  # built in each worker instead of pickled to it
        if self.model is None:
            self.model = _model(self.model_name)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (tokens,) = batch
        return self.model(input_ids=tokens, labels=tokens).loss


class BackpropModule(LightningModule):
    def __init__(self, model_name: str) -> None:
        super().__init__()
        self.model_name = model_name
        self.model: torch.nn.Module | None = None

    def configure_model(self) -> None:
        if self.model is None:
            self.model = _model(self.model_name)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (tokens,) = batch
        return self.model(input_ids=tokens, labels=tokens).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-5)


VARIANTS: dict[str, Callable[[str], LightningModule]] = {
    "zo": lambda model: ZOModule(model, {"lr": 1e-7, "eps": 1e-3}),
    "zo-query-parallel-q1": lambda model: ZOModule(model, {"lr": 1e-7, "eps": 1e-3, "query_parallel": True}),
    "zo-query-parallel-q4": lambda model: ZOModule(
        model, {"lr": 1e-7, "eps": 1e-3, "query_parallel": True, "num_directions": 4}
    ),
    "backprop": lambda model: BackpropModule(model),
}


def vocab_size(model: str) -> int:
    return {"opt-125m": 50272, "smollm2-135m": 49152}[model]


def run_variant(name: str, args: argparse.Namespace) -> dict[str, Any]:
    world = 2
    tokens = torch.randint(0, vocab_size(args.model), (world * args.batch * args.steps, args.length),
                           generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(tokens), batch_size=args.batch, shuffle=False)
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = Trainer(
            accelerator="cpu", devices=world, strategy="ddp_spawn", max_steps=args.steps, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[CountCollectives(out_dir)], num_sanity_val_steps=0,
        )
        started = time.perf_counter()
        trainer.fit(VARIANTS[name](args.model), train_dataloaders=loader)
        seconds = time.perf_counter() - started
        ranks = [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("rank*.json"))]
    if len(ranks) != world:
        raise RuntimeError(f"{name}: expected {world} rank reports, got {len(ranks)}")
    return summarise(name, ranks, args.steps, seconds)


def _total(phase: dict[str, Any]) -> int:
    return sum(entry["bytes"] for op, entry in phase.items() if not op.startswith("_seconds"))


def summarise(name: str, ranks: list[dict[str, Any]], steps: int, seconds: float) -> dict[str, Any]:
    per_rank = []
    for report in ranks:
        counts = report["counts"]
        step_bytes = [_total(counts.get(f"step {k}", {})) for k in range(steps)]
        per_rank.append({
            "rank": report["rank"],
            "bytes_per_step": step_bytes,
            "setup_bytes": _total(counts.get("setup", {})),
            "between_steps_bytes": _total(counts.get("between steps", {})),
            "teardown_bytes": _total(counts.get("teardown", {})),
            "counts": counts,
        })
    rank0 = per_rank[0]["counts"]
    step_ops = {op: {"calls_per_step": e["calls"], "bytes_per_step": e["bytes"], "payloads": e["payloads"]}
                for op, e in rank0.get(f"step {steps - 1}", {}).items() if not op.startswith("_")}
    setup_ops = {op: {"calls": e["calls"], "bytes": e["bytes"], "payloads": e["payloads"]}
                 for op, e in rank0.get("setup", {}).items()}
    return {
        "variant": name,
        "bytes_per_step_median": statistics.median(b for r in per_rank for b in r["bytes_per_step"]),
        "step_ops_rank0_last_step": step_ops,
        "setup_bytes_rank0": per_rank[0]["setup_bytes"],
        "setup_ops_rank0": setup_ops,
        "between_steps_bytes_rank0": per_rank[0]["between_steps_bytes"],
        "teardown_bytes_rank0": per_rank[0]["teardown_bytes"],
        "fit_seconds": seconds,
        "per_rank": per_rank,
    }


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def table(rows: list[dict[str, Any]]) -> str:
    backprop = next((r["bytes_per_step_median"] for r in rows if r["variant"] == "backprop"), None)
    lines = ["| variant | bytes/step/rank (median) | collectives per step | backprop ÷ this | one-off setup |",
             "|---|---|---|---|---|"]
    for row in rows:
        ops = ", ".join(f"{op} ×{e['calls_per_step']} ({'; '.join(e['payloads'][:2])})"
                        for op, e in row["step_ops_rank0_last_step"].items())
        ratio = f"{backprop / row['bytes_per_step_median']:,.0f}×" if backprop and row["bytes_per_step_median"] else ""
        lines.append(f"| {row['variant']} | {row['bytes_per_step_median']:,.0f} B ({human(row['bytes_per_step_median'])})"
                     f" | {ops} | {ratio} | {human(row['setup_bytes_rank0'])} |")
    return "\n".join(lines)


def report_name(model: str) -> str:
    return "communication" if model == "opt-125m" else f"communication_{model}"


def plot(name: str) -> None:
    from benchmarks.common import pyplot, read_report, save_plot

    plt = pyplot()
    if plt is None:
        return
    report = read_report(name)
    rows = report["results"]
    names = [r["variant"] for r in rows]
    values = [max(r["bytes_per_step_median"], 1) for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = ["#c44e52" if n == "backprop" else "#4c72b0" for n in names]
    ax.bar(names, values, color=colors)
    ax.set_yscale("log")
    for x, v in enumerate(values):
        ax.text(x, v, human(v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), [n.replace("zo-query-parallel-", "zo query-parallel\n") for n in names],
                  fontsize=8)
    ax.set_ylabel("bytes per step per rank (payload, log scale)")
    ax.set_ylim(1, 50 * max(values))
    ax.set_title(f"DDP, 2 CPU ranks (gloo): {report['model']}, {report['params'] / 1e6:.1f}M params\n"
                 "setup traffic (initial parameter broadcast) excluded", fontsize=8)
    save_plot(plt, fig, ax, name)


def main() -> None:
    from benchmarks.common import MODELS, build_model, machine, source_info, write_report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="opt-125m")
    parser.add_argument("--batch", type=int, default=2, help="per rank")
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    name = args.out or report_name(args.model)
    if args.plot_only:
        plot(name)
        return
    load_before = machine()["loadavg_1_5_15"]
    params = sum(p.numel() for p in build_model(args.model).parameters())
    rows = []
    for variant in args.variants.split(","):
        rows.append(run_variant(variant, args))
        print(f"{variant}: {rows[-1]['bytes_per_step_median']:,.0f} B/step, setup {rows[-1]['setup_bytes_rank0']:,} B",
              flush=True)
    payload = {"model": MODELS[args.model][1], "params": params, "world_size": 2, "backend": "gloo",
               "batch_per_rank": args.batch, "length": args.length, "steps": args.steps, "machine": machine(),
               "loadavg_before": load_before, "source": source_info(),
               "command": "python -m benchmarks.communication " + " ".join(sys.argv[1:]),
               "fp32_gradient_bytes": 4 * params, "results": rows}
    path = write_report(name, payload)
    print(table(rows))
    print(f"written to {path}")
    plot(name)


if __name__ == "__main__":
    # Run through the importable module, so that the classes pickled to the spawned workers are found there.
    import benchmarks.communication as this

    this.main()
