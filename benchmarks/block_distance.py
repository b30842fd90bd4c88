"""How far each block moved in a run: ‖θ_b − θ_b(0)‖ per block, from the weights ``DevSelection`` kept.

A block whose lr is too large for its size shows up here as the block that moved most, relative to its own weights:
the README's before/after table for ``zo.lr_scales: by_block_size`` comes from this script.

    python -m benchmarks.block_distance RUN_DIR [RUN_DIR ...] --out benchmarks/results/llm_table/block_distance.json

RUN_DIR is a run's log folder (``runs/<name>/version_<k>``), holding ``best_trainable.pt``; the base model is the
recipes' SmolLM2-135M. Prints, per run, the largest relative moves and the embedding's, and writes every block's
``distance`` and ``relative`` (distance over the block's initial norm).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def block_distances(run: Path) -> list[dict]:
    from zolightning.functional.blocks import partition_blocks
    from zolightning.tasks import PromptClassificationTask

    model = PromptClassificationTask(label_words=[" terrible", " great"])
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    state = torch.load(run / "best_trainable.pt", map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    rows = []
    for block in partition_blocks(model, "layer"):
        moved = sum(float((state[n].float() - base[n]).pow(2).sum()) for n in block.param_names if n in state)
        norm = sum(float(base[n].pow(2).sum()) for n in block.param_names)
        rows.append({"block": block.name, "numel": block.numel, "distance": moved ** 0.5,
                     "relative": (moved / norm) ** 0.5 if norm else 0.0})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = {}
    for run in args.runs:
        rows = block_distances(run)
        report[str(run)] = rows
        top = sorted(rows, key=lambda r: -r["relative"])[:4]
        print(run, "largest relative moves:", ", ".join(f"{r['block']} {r['relative']:.2e}" for r in top))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
