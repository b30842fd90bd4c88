import pytest
import torch

from zolightning.optim import ZOSGDSign


@pytest.mark.parametrize("elementwise", [False, True])
def test_the_step_has_length_lr_whatever_the_size_of_the_estimate(elementwise):
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    x = torch.randn(8, 5)
    optimizer = ZOSGDSign(layer.named_parameters(), lr=0.1, elementwise=elementwise)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer.step(lambda: 1000.0 * layer(x).pow(2).mean(), step=3)
    g = optimizer.last_estimate.projected_gradient(1e-3)
    seed = optimizer.last_estimate.seed
    for entry, old in zip(optimizer.engine.plan(3), before):
        z = entry.direction_at(seed)
        expected = -0.1 * (torch.sign(g * z) if elementwise else torch.sign(torch.tensor(g)) * z)
        torch.testing.assert_close(entry.param - old, expected, rtol=1e-4, atol=1e-5)
