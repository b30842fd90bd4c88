import pytest
import torch

from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.functional.estimate import DirectionalEstimate
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


def test_an_exception_in_a_candidate_evaluation_leaves_the_descended_weights():
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
    # The step raised before recording its estimate: rebuild it from the first three forwards (L0, L+, L−).
    (seed,) = optimizer.engine.seeds(0)
    g = DirectionalEstimate(seed, loss_plus=losses[1], loss_minus=losses[2]).projected_gradient(1e-3)
    # The weights were left at θ − lr·g·z, a valid ZO-SGD step, never at a perturbed point.
    for entry, b in zip(optimizer.engine.plan(0), before):
        torch.testing.assert_close(entry.param.detach(), b - 0.1 * g * entry.direction_at(seed))


def test_several_directions_are_refused_clearly():
    layer = torch.nn.Linear(2, 1)
    for config in (ZOConfig(num_directions=2), ZOConfig(query_parallel=True)):
        with pytest.raises(ValueError, match="one direction"):
            ZOSGDCons(layer.parameters()).use_engine(StepEngine(config))
