import pytest
import torch

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
    calls = []

    def loss():
        calls.append(1)
        if len(calls) == 5:  # the θ + lr·g·z candidate
            raise RuntimeError("boom")
        return layer(x).pow(2).mean()

    optimizer = ZOSGDCons(layer.parameters(), lr=0.1)
    before = [p.detach().clone() for p in layer.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        optimizer.step(loss)
    g = optimizer.last_estimate.projected_gradient(1e-3)
    seed = optimizer.last_estimate.seed
    # The weights were left at θ − lr·g·z, a valid ZO-SGD step, never at a perturbed point.
    for entry, b in zip(optimizer.dense_plan(), before):
        torch.testing.assert_close(entry.param.detach(), b - 0.1 * g * entry.direction_at(seed))


def test_several_directions_are_refused_clearly():
    layer = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="one direction"):
        ZOSGDCons(layer.parameters()).step(lambda: layer.weight.sum(), seed=[1, 2])
