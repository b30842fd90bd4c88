"""The ZO step without the Trainer: in a Lightning Fabric loop and in a plain PyTorch loop, on one process and on two
(gloo), checkpointed with ``fabric.save`` and resumed with ``fabric.load``."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from lightning.fabric import Fabric

from tests.loop_helpers import EPS, LR, fabric_worker, make_model, plain_distributed_worker, weights, zo_loop
from zolightning.optim import ZOSGD
from zolightning.structures import BlockSelection

STEPS, BATCH = 8, 8


def assert_matches_one_process(weights_2x8: torch.Tensor) -> None:
    # Losses averaged over 2×8 or over 16 samples differ in the last fp32 bits, and (L+ − L−)/2ε multiplies that by
    # |L|/ε: agreement is to ~1e-5 in the weights, while training moved them by more than 1e-2.
    single = one_process_weights(2 * BATCH)
    torch.testing.assert_close(weights_2x8, single, rtol=1e-3, atol=1e-4)
    assert float((single - weights(make_model())).abs().max()) > 1e-2


def one_process_weights(batch: int) -> torch.Tensor:
    model = make_model()
    zo_loop(model, ZOSGD(model.named_parameters(), lr=LR, eps=EPS), range(STEPS), batch)
    return weights(model)


def test_a_fabric_loop_is_the_plain_loop_and_lowers_the_loss():
    fabric = Fabric(accelerator="cpu", devices=1)
    model = make_model()
    model, optimizer = fabric.setup(model, ZOSGD(model.named_parameters(), lr=LR, eps=EPS))
    losses = zo_loop(model, optimizer, range(60), BATCH)
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    plain = make_model()
    zo_loop(plain, ZOSGD(plain.named_parameters(), lr=LR, eps=EPS), range(60), BATCH)
    assert torch.equal(weights(model), weights(plain))


def test_two_fabric_processes_stay_identical_and_match_one_process_with_twice_the_batch(tmp_path):
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn")
    fabric.launch(fabric_worker, str(tmp_path), STEPS, BATCH)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.equal(ranks[0], ranks[1])
    assert_matches_one_process(ranks[0])


def test_two_plain_torch_distributed_processes_stay_identical_and_match_one_process(tmp_path):
    mp.spawn(plain_distributed_worker, args=(2, str(tmp_path), STEPS, BATCH), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.equal(ranks[0], ranks[1])
    assert_matches_one_process(ranks[0])


def fabric_run(tmp_path, steps: int, save_at: int | None = None, resume: bool = False) -> torch.Tensor:
    """Momentum (optimizer state) and a random block order installed on the optimizer's engine (structure state)."""
    fabric = Fabric(accelerator="cpu", devices=1)
    model = make_model()
    optimizer = ZOSGD(model.named_parameters(), lr=LR, eps=EPS, momentum=0.9)
    optimizer.engine.install(BlockSelection("parameter", order="random-permutation"), module=model)
    model, optimizer = fabric.setup(model, optimizer)
    start = 0
    if resume:
        start = fabric.load(tmp_path / "zo.ckpt", {"model": model, "optimizer": optimizer})["step"]
    for step in range(start, steps):
        zo_loop(model, optimizer, range(step, step + 1), BATCH)
        if save_at == step + 1:
            fabric.save(tmp_path / "zo.ckpt", {"model": model, "optimizer": optimizer, "step": step + 1})
    return weights(model)


def test_a_fabric_run_saved_and_loaded_mid_run_ends_bitwise_equal(tmp_path):
    uninterrupted = fabric_run(tmp_path, STEPS)
    fabric_run(tmp_path, 3, save_at=3)
    resumed = fabric_run(tmp_path, STEPS, resume=True)
    assert torch.equal(resumed, uninterrupted)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_step_inside_one_autocast_region_sees_fresh_weights_at_each_point(precision):
    """Fabric's autocast around the whole step: the weight cast of θ + εz must not be reused at θ − εz."""
    fabric = Fabric(accelerator="cpu", devices=1, precision=precision)
    model = make_model()
    model, optimizer = fabric.setup(model, ZOSGD(model.named_parameters(), lr=0.0, eps=1e-2))
    x, y = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)), torch.zeros(64, 1)
    with fabric.autocast():
        optimizer.step(lambda: torch.nn.functional.mse_loss(model(x).float(), y))
    estimate = optimizer.last_estimate
    reference = make_model()
    reference_optimizer = ZOSGD(reference.named_parameters(), lr=0.0, eps=1e-2)
    reference_optimizer.step(lambda: torch.nn.functional.mse_loss(reference(x), y))
    fp32 = reference_optimizer.last_estimate.projected_gradient(1e-2)
    assert float(estimate.loss_plus) != float(estimate.loss_minus)
    assert estimate.projected_gradient(1e-2) == pytest.approx(fp32, rel=0.1)
