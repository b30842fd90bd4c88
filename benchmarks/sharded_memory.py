"""Memory per rank of ZO on sharded weights (FSDP2 ``fully_shard``, CPU gloo) at 1, 2 and 4 ranks.

Each rank builds the OPT-125m-shaped model on the meta device, shards every decoder layer and the whole model over a
one-dimensional mesh, materializes only its own shards (``to_empty`` + a seeded re-initialization), then takes
``--steps`` ZO-SGD steps (``zolightning.optim.ZOSGD`` on counter noise: each rank moves its shards in place). Per rank
it reports:

- ``shard_mb``: the bytes of the parameters it holds (its local shards), the part that falls as 1/N;
- ``rss_weights_mb``: resident memory after its shards exist, over the resident memory before the model was built;
- ``peak_step_mb``: the high-water mark of resident memory over the steps (reset after the build), over the same
  baseline: the shards plus one layer's all-gathered weights and the activations of the forwards.

    python -m benchmarks.sharded_memory                   # 1, 2 and 4 ranks, batch 2 × 32, 2 steps
    python -m benchmarks.sharded_memory --ranks 1,2 --steps 3

Writes ``results/sharded_memory.json`` and prints a table, ratios to one rank last.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.common import machine, source_info, write_report


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _rank(rank: int, world: int, port: int, steps: int, batch: int, length: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import OPTConfig, OPTForCausalLM

    from zolightning.optim import ZOSGD

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        baseline = _status_kb("VmRSS")
        with torch.device("meta"):
            model = OPTForCausalLM(OPTConfig()).eval()
        mesh = init_device_mesh("cpu", (world,))
        for layer in model.model.decoder.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        model.to_empty(device="cpu")
        torch.manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.02)
        shard_bytes = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
        rss_weights = _status_kb("VmRSS") - baseline
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the high-water mark (VmHWM) to the current RSS
        tokens = torch.randint(0, 50272, (batch, length), generator=torch.Generator().manual_seed(rank))
        optimizer = ZOSGD(model.named_parameters(), lr=1e-7, eps=1e-3)
        for step in range(steps):
            optimizer.step(lambda: model(input_ids=tokens, labels=tokens).loss, step=step)
        row = dict(rank=rank, world=world, shard_mb=shard_bytes / 2**20, rss_weights_mb=rss_weights / 1024,
                   peak_step_mb=(_status_kb("VmHWM") - baseline) / 1024)
        Path(out, f"rank{rank}.json").write_text(json.dumps(row))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(world: int, steps: int, batch: int, length: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_rank, args=(world, _free_port(), steps, batch, length, out), nprocs=world, join=True)
        return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=32)
    args = parser.parse_args()
    rows = {int(w): measure(int(w), args.steps, args.batch, args.length) for w in args.ranks.split(",")}
    one = max(r["rss_weights_mb"] for r in rows[min(rows)])
    print(f"{'ranks':>5} {'shard MiB':>10} {'RSS of weights MiB':>19} {'peak in steps MiB':>18} {'weights / 1 rank':>17}")
    summary = {}
    for world, ranks in rows.items():
        worst = max(ranks, key=lambda r: r["rss_weights_mb"])
        ratio = worst["rss_weights_mb"] / one
        summary[world] = dict(shard_mb=max(r["shard_mb"] for r in ranks), rss_weights_mb=worst["rss_weights_mb"],
                              peak_step_mb=max(r["peak_step_mb"] for r in ranks), ratio_to_one_rank=ratio)
        print(f"{world:>5} {summary[world]['shard_mb']:>10.1f} {worst['rss_weights_mb']:>19.1f} "
              f"{summary[world]['peak_step_mb']:>18.1f} {ratio:>17.2f}")
    payload = {"model": "OPT-125m-shaped (random init), fp32", "batch": args.batch, "length": args.length,
               "steps": args.steps, "machine": machine(), "source": source_info(),
               "command": "python -m benchmarks.sharded_memory " + " ".join(sys.argv[1:]),
               "ranks": rows, "summary": summary}
    print(f"written to {write_report('sharded_memory', payload)}")


if __name__ == "__main__":
    main()
