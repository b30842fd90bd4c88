"""ZO on sharded weights through Lightning's ``ModelParallelStrategy`` (FSDP2 ``fully_shard``), two CPU ranks (gloo):
bitwise the weights of two DDP ranks with the same data, close to one process with the whole batch, a bitwise resume
from a sharded (distributed) checkpoint, and a trajectory that replays bitwise on one unsharded process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import run_script
from tests.ddp_helpers import Regressor, fit, flat_weights
from tests.sharded_script import STEPS


@pytest.fixture(scope="module")
def sharded_records(tmp_path_factory) -> Path:
    return run_script("sharded_script.py", tmp_path_factory.mktemp("sharded-script"))


def records(folder: Path, case: str) -> list[dict]:
    return [torch.load(folder / case / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("structure", ["dense", "bcd"])
def test_two_sharded_ranks_train_bitwise_as_two_ddp_ranks(sharded_records, ddp_script_records, tmp_path, structure):
    rank0, rank1 = records(sharded_records, f"sharded-{structure}")
    assert rank0["all_sharded"] and rank0["global_step"] == rank1["global_step"] == STEPS
    assert torch.equal(rank0["weights"], rank1["weights"])  # every rank gathered the same whole weights
    ddp0, ddp1 = records(ddp_script_records, f"zosgd-{structure}-10")
    assert ddp0["global_step"] == STEPS and torch.equal(ddp0["weights"], ddp1["weights"])
    # Each rank moved its own rows with the whole tensor's z from their offset: the same numbers as DDP's replicas.
    assert torch.equal(rank0["weights"], ddp0["weights"])
    (single,) = fit(tmp_path, devices=1, batch_size=16, structure=structure, steps=STEPS)
    torch.testing.assert_close(rank0["weights"], single["weights"], rtol=1e-3, atol=1e-4)  # the DDP test's tolerance
    assert float((rank0["weights"] - flat_weights(Regressor())).abs().max()) > 1e-2


@pytest.mark.parametrize("structure", ["dense", "bcd"])
def test_a_resume_from_a_sharded_checkpoint_is_bitwise(sharded_records, structure):
    resumed, _ = records(sharded_records, f"sharded-{structure}-resumed")
    uninterrupted, _ = records(sharded_records, f"sharded-{structure}")
    first, _ = records(sharded_records, f"sharded-{structure}-resumed/first")
    assert resumed["global_step"] == STEPS and first["global_step"] == 6
    assert not torch.equal(first["weights"], uninterrupted["weights"])
    assert torch.equal(resumed["weights"], uninterrupted["weights"])


def test_a_trajectory_logged_by_two_sharded_ranks_replays_bitwise_on_one_unsharded_process(sharded_records):
    from zolightning.trajectory import replay

    rank0, _ = records(sharded_records, "sharded-bcd-logged")
    base = Regressor()
    result = replay(base, sharded_records / "sharded-bcd-logged" / "run.zot")
    assert result.steps == STEPS and result.verified == [STEPS]  # the sharded run's own fingerprint of its weights
    assert torch.equal(flat_weights(base), rank0["weights"])


def test_fabric_with_fsdp2_trains_bitwise_as_one_process(tmp_path):
    from tests.sharded_fabric_script import STEPS as FABRIC_STEPS, data, network
    from zolightning.optim import ZOSGD

    folder = run_script("sharded_fabric_script.py", tmp_path / "fabric")
    rank0, rank1 = (torch.load(folder / f"rank{r}.pt") for r in range(2))
    assert rank0["sharded"] and torch.equal(rank0["weights"], rank1["weights"])
    # One process, whole tensors, the mean of the two ranks' losses: what the all-reduce averages.
    torch.set_num_threads(1)
    net = network()
    optimizer = ZOSGD(net.named_parameters(), lr=0.01, eps=1e-3)
    (x0, y0), (x1, y1) = data(0, 2), data(1, 2)
    mse = torch.nn.functional.mse_loss
    for _ in range(FABRIC_STEPS):
        optimizer.step(lambda: (mse(net(x0), y0) + mse(net(x1), y1)) / 2)
    assert torch.equal(rank0["weights"], flat_weights(net))


def test_a_non_finite_loss_on_one_sharded_rank_skips_the_step_on_every_rank_as_under_ddp(sharded_records,
                                                                                        ddp_script_records):
    rank0, rank1 = records(sharded_records, "sharded-nan-on-rank1")
    ddp0, _ = records(ddp_script_records, "nan-on-rank1")
    assert ddp0["nonfinite_steps"] == 1  # the DDP run skipped its NaN step
    assert torch.equal(rank0["weights"], rank1["weights"]) and torch.equal(rank0["weights"], ddp0["weights"])


def test_diagnostics_on_two_sharded_ranks_measure_the_global_probe_batch(sharded_records, tmp_path):
    from dataclasses import asdict

    from tests.sharded_script import DIAGNOSE_EVERY
    from zolightning.callbacks import ZODiagnostics

    rank0, rank1 = records(sharded_records, "sharded-bcd-diagnosed")
    measured = rank0["diagnostics"]
    assert [m["step"] for m in measured] == list(range(0, STEPS, DIAGNOSE_EVERY))
    assert all(m["skipped"] is None and m["cosine"] is not None for m in measured)  # FSDP2's backward gave ∇L
    assert rank1["diagnostics"] == measured  # the sums crossed ranks: both ranks hold the global figures
    # Measuring leaves the weights bitwise as an unmeasured run's.
    assert torch.equal(rank0["weights"], records(sharded_records, "sharded-bcd")[0]["weights"])
    # One process whose probe batch is both ranks' first batches measures the same step.
    diagnostics = ZODiagnostics(every_n_steps=DIAGNOSE_EVERY, extra_directions=2, image_steps=8)
    fit(tmp_path, devices=1, batch_size=16, structure="bcd", steps=STEPS, callbacks=[diagnostics])
    single = [asdict(m.statistics) for m in diagnostics.measurements]
    assert len(single) == len(measured)
    for sharded, whole in zip(measured, single):
        for name in ("cosine", "alignment", "variance", "relative_variance", "projected_gradient_rms"):
            assert sharded[name] == pytest.approx(whole[name], rel=1e-3), name
        # The finite difference's error is fp32 rounding of the losses here, which the mean of two ranks' means
        # rounds otherwise: only its scale is comparable.
        assert sharded["snr"] > 1e6 and whole["snr"] > 1e6
    assert any(0 < m["alignment"] < 1 for m in measured)  # one block of several: the gradient is partly outside
    distances = diagnostics._motion.distances()
    assert rank0["distances"] == rank1["distances"] and rank0["distances"].keys() == distances.keys()
    for block, distance in distances.items():  # per block, over both ranks' shards: the whole tensors' distance
        assert rank0["distances"][block] == pytest.approx(distance, rel=1e-3) and distance > 0, block


def test_the_lr_finder_on_two_sharded_ranks_searches_the_global_batches(sharded_records, tmp_path):
    from tests.sharded_script import FINDER
    from zolightning.callbacks import ZOLearningRateFinder

    rank0, rank1 = records(sharded_records, "sharded-dense-found")
    found = rank0["finder"]
    assert rank0["global_step"] == 0 and found["lr"] is not None and found["eps_curve"]
    assert rank1["finder"] == found  # every loss was averaged over ranks: both took the same path
    assert torch.equal(rank0["weights"], flat_weights(Regressor()))  # the search left the weights bitwise
    finder = ZOLearningRateFinder(**FINDER)
    fit(tmp_path, devices=1, batch_size=16, structure="dense", steps=STEPS, callbacks=[finder])
    whole = finder.result
    assert whole is not None and whole.eps == found["eps"] and whole.eps_range == found["eps_range"]
    assert [lr for lr, _ in whole.lr_curve] == [lr for lr, _ in found["lr_curve"]]
    torch.testing.assert_close(torch.tensor([d for _, d in found["lr_curve"]]),
                               torch.tensor([d for _, d in whole.lr_curve]), rtol=1e-2, atol=1e-6)
    assert found["lr"] == pytest.approx(whole.lr, rel=1e-2)
