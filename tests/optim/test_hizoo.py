import pytest
import torch

from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.optim import HiZOO
from zolightning.structures import PerturbationStructure, TrainableTensor


def test_the_update_moves_along_the_preconditioned_direction_and_d_learns_the_curvature():
    torch.manual_seed(0)
    x = torch.nn.Parameter(torch.randn(6))
    scales = torch.tensor([100.0, 100.0, 1.0, 1.0, 0.01, 0.01])
    loss = lambda: 0.5 * (scales * x * x).sum()  # noqa: E731
    optimizer = HiZOO([("x", x)], lr=1e-3, eps=1e-2, hessian_smoothing=0.01)
    hessian = torch.tensor([4.0, 1.0, 1.0, 1.0, 1.0, 0.25])
    optimizer.hessian(x).copy_(hessian)
    plan = PerturbationStructure().plan([TrainableTensor("x", x, 1e-2)], 0)
    before = x.detach().clone()
    optimizer.step(loss, step=0)
    estimate = optimizer.last_estimate
    assert estimate.loss_center is not None  # the third forward
    g = estimate.projected_gradient(1e-2)
    u = plan[0].direction_at(estimate.seed)  # the unpreconditioned noise of the structure
    z = u / hessian.sqrt()
    torch.testing.assert_close(x.detach() - before, -1e-3 * g * z, rtol=1e-4, atol=1e-7)
    curvature = abs(float(estimate.second_difference)) / (2 * 1e-2**2)
    expected = 0.99 * hessian + 0.01 * curvature * hessian * u * u
    torch.testing.assert_close(optimizer.hessian(x), expected, rtol=1e-4, atol=1e-6)


def test_several_directions_are_refused_clearly():
    layer = torch.nn.Linear(2, 1)
    for config in (ZOConfig(num_directions=2), ZOConfig(query_parallel=True)):
        with pytest.raises(ValueError, match="one direction"):
            HiZOO(layer.parameters()).use_engine(StepEngine(config))


def test_a_one_sided_estimate_is_refused_clearly():
    layer = torch.nn.Linear(2, 1)
    for estimator in ("one-sided", "forward-gradient"):
        with pytest.raises(ValueError, match="two-sided"):
            HiZOO(layer.parameters()).use_engine(StepEngine(ZOConfig(estimator=estimator), module=layer))


def test_bad_smoothing_is_refused_by_name():
    with pytest.raises(ValueError, match="`hessian_smoothing`"):
        HiZOO(torch.nn.Linear(2, 1).parameters(), hessian_smoothing=0.0)
