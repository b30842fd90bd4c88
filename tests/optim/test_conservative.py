import pytest
import torch

from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.optim import ZOSGDCons


def test_the_loss_on_the_batch_never_rises_even_with_a_huge_lr():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    loss = lambda: (layer(x) - y).pow(2).mean()  # noqa: E731
    optimizer = ZOSGDCons(layer.parameters(), lr=5.0, eps=1e-3)
    previous = float(loss().detach())
    moved = 0
    for _ in range(20):
        optimizer.step(loss)
        now = float(loss().detach())
        assert now <= previous + 1e-6
        moved += now < previous
        previous = now
    assert moved > 0


def test_the_candidates_are_points_of_the_measurement_and_the_update_moves_to_the_best():
    """The engine evaluates θ ∓ lr·g·z (forwards 4 and 5) and restores θ; the update only moves, to the lowest of the
    three points, without calling the objective."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 1)
    x = torch.randn(5, 3)
    weights_at = []

    def loss():
        weights_at.append(layer.weight.detach().clone())
        return layer(x).pow(2).mean()

    optimizer = ZOSGDCons(layer.parameters(), lr=0.1)
    before = layer.weight.detach().clone()
    optimizer.step(loss)
    assert len(weights_at) == 5  # L0, L+, L−, then the two candidates: all measured, none in the update
    measurement = optimizer.engine.last
    (estimate,) = measurement.estimates
    (entry,) = [e for e in measurement.plan if e.param is layer.weight]
    step = 0.1 * estimate.projected_gradient(1e-3) * entry.direction_at(estimate.seed)
    torch.testing.assert_close(weights_at[3], before - step)
    torch.testing.assert_close(weights_at[4], before + step)
    losses = {-1.0: float(measurement.candidate_losses[0, 0]), 1.0: float(measurement.candidate_losses[0, 1]),
              0.0: float(estimate.loss_center)}
    best = min(losses, key=losses.__getitem__)
    torch.testing.assert_close(layer.weight.detach(), before + best * step)


def test_an_exception_in_a_candidate_evaluation_leaves_the_weights_unmoved():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 1)
    x = torch.randn(5, 3)
    losses = []

    def loss():
        if len(losses) == 4:  # the fifth forward: the θ + lr·g·z candidate
            raise RuntimeError("boom")
        losses.append(layer(x).pow(2).mean())
        return losses[-1]

    optimizer = ZOSGDCons(layer.parameters(), lr=0.1)
    before = [p.detach().clone() for p in layer.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        optimizer.step(loss)
    # The candidates are the measurement's points: the engine brings θ back from them, and no update ran.
    for p, b in zip(layer.parameters(), before):
        torch.testing.assert_close(p.detach(), b, rtol=1e-6, atol=1e-6)
    assert optimizer.engine.steps == 0


def test_several_directions_are_refused_clearly():
    layer = torch.nn.Linear(2, 1)
    for config in (ZOConfig(num_directions=2), ZOConfig(query_parallel=True)):
        with pytest.raises(ValueError, match="one direction"):
            ZOSGDCons(layer.parameters()).use_engine(StepEngine(config))
