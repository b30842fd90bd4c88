"""Train under ``strategy="ddp"`` on two CPU processes and write each rank's record under ``OUTPUT/<case>/``.

Usage: ``python tests/ddp_script.py OUTPUT``. Lightning runs this script again for rank 1 (``ddp`` launches by
re-executing the script), so it cannot run inside pytest; ``tests/test_module_ddp.py`` runs it as a subprocess and
compares the records. All cases run in one launch: later fits reuse the processes and the process group.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

NAN_STEP = 2
# Each case: the keyword arguments of `tests.ddp_helpers.fit` besides the folder, devices and batch size.
CASES: dict[str, dict] = {
    "zosgd-dense": dict(structure="dense"),
    "sgd-lozo": dict(structure="lozo", optimizer="sgd"),
    # Only rank 1's loss is NaN, at step NAN_STEP.
    "nan-on-rank1": dict(nan_at=(1, NAN_STEP)),
    "nan-on-rank1-query-parallel": dict(nan_at=(1, NAN_STEP), query_parallel=True),
    # The references of the sharded runs (tests/sharded_script.py): 10 steps of ZO-SGD, dense and one tensor a step.
    "zosgd-dense-10": dict(structure="dense", steps=10),
    "zosgd-bcd-10": dict(structure="bcd", steps=10),
}


def main(output: Path) -> None:
    from lightning.pytorch.strategies import DDPStrategy

    from tests.ddp_helpers import COLLECTIVE_TIMEOUT, fit

    for name, kwargs in CASES.items():
        strategy = DDPStrategy(timeout=COLLECTIVE_TIMEOUT)
        fit(output / name, devices=2, batch_size=8, strategy=strategy, read=False, **kwargs)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
