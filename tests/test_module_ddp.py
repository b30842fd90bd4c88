"""ZO under data parallelism: two CPU ranks (gloo).

In-process runs use ``ddp_spawn``, since ``strategy="ddp"`` would re-launch pytest itself; ``ddp`` is run through
``tests/ddp_script.py`` in a subprocess (one launch for several cases, which also hosts the non-finite-loss cases:
launching two processes costs more than their training). Every run has a collective timeout (``COLLECTIVE_TIMEOUT``),
so a rank that skips a collective makes the run fail instead of hanging.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.ddp_helpers import MAX_STEPS, Regressor, fit, flat_weights
from tests.ddp_script import CASES, NAN_STEP



def run(tmp_path: Path, devices: int, batch_size: int, **kwargs) -> list[dict]:
    folder = tmp_path / f"d{devices}-{len(list(tmp_path.iterdir()))}"
    return fit(folder, devices, batch_size, **kwargs)


def assert_two_ranks_match_one_rank_with_twice_the_batch(tmp_path: Path, losses: int = 2, **kwargs) -> None:
    rank0, rank1 = run(tmp_path, devices=2, batch_size=8, **kwargs)
    # The same step seed and the same all-reduced losses on every rank: bitwise the same update.
    assert torch.equal(rank0["weights"], rank1["weights"])
    assert rank0["global_step"] == rank1["global_step"] == MAX_STEPS
    # Nothing but the losses travels: one all-reduce of the `losses` numbers an update (2 for L±, 3 with L0), no seeds,
    # weights or gradients, and no barrier. Accumulated micro-batches send nothing: their losses are averaged locally
    # and travel with the update's.
    every = kwargs.get("accumulate_batches", 1)
    for record in (rank0, rank1):
        for batch, step in enumerate(record["collectives"]):
            assert step == ([("all_reduce", losses)] if (batch + 1) % every == 0 else []), (batch, step)
    (single,) = run(tmp_path, devices=1, batch_size=16, **kwargs)
    # Losses averaged over 2×8 or over 16 samples differ in the last fp32 bits, and (L+ − L−)/2ε multiplies that by
    # |L|/ε ≈ 5e3: agreement is to ~1e-5 in the weights, while training moved them by more than 1e-2.
    torch.testing.assert_close(rank0["weights"], single["weights"], rtol=1e-3, atol=1e-4)
    initial = flat_weights(Regressor())
    assert float((single["weights"] - initial).abs().max()) > 1e-2


@pytest.mark.parametrize("structure", ["dense", "bcd", "sparse", "lozo", "subzero", "lezo"])
def test_two_ranks_stay_identical_and_match_one_rank_with_twice_the_batch(tmp_path, structure):
    assert_two_ranks_match_one_rank_with_twice_the_batch(tmp_path, structure=structure)


@pytest.mark.parametrize(("optimizer", "structure"), [("sgd", "dense"), ("adam", "bcd+sparse")])
def test_a_plain_torch_optimizer_under_ddp_stays_identical_and_matches_one_rank(tmp_path, optimizer, structure):
    # The module writes the all-reduced estimate g·z into `.grad` on every rank; the torch optimizer steps on it.
    assert_two_ranks_match_one_rank_with_twice_the_batch(tmp_path, structure=structure, optimizer=optimizer)


@pytest.mark.parametrize(
    ("optimizer", "options", "losses"),
    [("zo-adam", dict(structure="bcd", estimator="one-sided"), 2), ("hizoo", dict(structure="lozo", accumulate_batches=2), 3)],
    ids=["zo-adam-bcd-one-sided", "hizoo-lozo-accumulated"],
)
def test_the_optimizer_family_and_the_estimator_options_under_ddp(tmp_path, optimizer, options, losses):
    assert_two_ranks_match_one_rank_with_twice_the_batch(tmp_path, losses=losses, optimizer=optimizer, **options)


def test_query_parallel_ranks_apply_every_ranks_direction_like_q_directions_on_one_rank(tmp_path):
    # Both ranks see the same batches, so two ranks with one direction each must equal one rank with q = 2.
    rank0, rank1 = run(tmp_path, devices=2, batch_size=8, shard=False, query_parallel=True)
    assert torch.equal(rank0["weights"], rank1["weights"])
    # Only each rank's losses are gathered: a few numbers per direction (L+, L− and the estimate's other values),
    # nothing parameter-sized (Lightning gathers the tensors' sizes first).
    for step in rank0["collectives"] + rank1["collectives"]:
        assert step and all(name == "all_gather" and numel <= 4 for name, numel in step), step
    (single,) = run(tmp_path, devices=1, batch_size=8, num_directions=2, restore="snapshot")
    torch.testing.assert_close(rank0["weights"], single["weights"], rtol=1e-5, atol=1e-6)
    (one_direction,) = run(tmp_path, devices=1, batch_size=8)
    assert not torch.allclose(single["weights"], one_direction["weights"])


def script_records(folder: Path, case: str) -> list[dict]:
    return [torch.load(folder / case / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("case", ["zosgd-dense", "sgd-lozo"])
def test_strategy_ddp_keeps_ranks_identical_and_matches_one_rank(ddp_script_records, tmp_path, case):
    rank0, rank1 = script_records(ddp_script_records, case)
    assert torch.equal(rank0["weights"], rank1["weights"])
    assert rank0["global_step"] == rank1["global_step"] == MAX_STEPS
    for step in rank0["collectives"] + rank1["collectives"]:
        assert [call for call in step if call != ("barrier", 0)] == [("all_reduce", 2)], step
    (single,) = run(tmp_path, devices=1, batch_size=16, **CASES[case])
    torch.testing.assert_close(rank0["weights"], single["weights"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("case", ["nan-on-rank1", "nan-on-rank1-query-parallel"])
def test_a_non_finite_loss_on_one_rank_makes_every_rank_skip_that_step_and_training_goes_on(ddp_script_records, case):
    # Only rank 1's loss is NaN at one step. The reduced (or gathered) losses are then non-finite on both ranks, so both
    # skip the update and go on to max_steps. A rank that skipped alone would leave the other waiting on a collective:
    # the collective timeout and the script's timeout turn that into a failure rather than a hang.
    rank0, rank1 = script_records(ddp_script_records, case)
    for record in (rank0, rank1):
        assert record["global_step"] == MAX_STEPS
        assert record["nonfinite_steps"] == 1
        # The skipped step only perturbs and restores (exactly from a snapshot under query parallelism, to rounding
        # with the arithmetic restore); every other step updates.
        moved = record["moved"]
        assert moved[NAN_STEP] < 1e-6, moved
        assert min(moved[:NAN_STEP] + moved[NAN_STEP + 1:]) > 1e-4, moved
        assert len(record["collectives"][NAN_STEP]) > 0  # the NaN step still communicated, on both ranks
    assert rank0["moved"] == rank1["moved"]
    assert torch.equal(rank0["weights"], rank1["weights"])


@pytest.mark.parametrize("query_parallel", [False, True])
def test_prefix_reuse_under_ddp_is_exact_and_ranks_stay_identical(tmp_path, query_parallel):
    options = dict(structure="bcd-layer", stacked=True, query_parallel=query_parallel)
    reused = run(tmp_path, devices=2, batch_size=8, **options)
    full = run(tmp_path, devices=2, batch_size=8, prefix_reuse=False, **options)
    assert torch.equal(reused[0]["weights"], reused[1]["weights"])
    assert torch.equal(reused[0]["weights"], full[0]["weights"])
    # Blocks cycle input, layer 0, 1, 2, output: the steps on layers 1 and 2 and on the output skip a prefix.
    assert reused[0]["prefix_reused"] == [0, 0, 1, 1, 1, 0] and full[0]["prefix_reused"] == [0] * MAX_STEPS
