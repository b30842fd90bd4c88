"""The estimate record and its pure helpers (``zolightning/functional/estimate.py``)."""

import pytest
import torch

from zolightning.functional.estimate import DirectionalEstimate, evaluate_loss


def test_a_non_scalar_loss_is_refused_with_the_fix():
    with pytest.raises(TypeError, match="mean"):
        evaluate_loss(lambda: torch.ones(3))
    assert float(evaluate_loss(lambda: 2)) == 2.0


def test_a_backward_inside_the_objective_says_what_to_remove():
    weight = torch.ones(2, requires_grad=True)

    def objective():
        loss = (weight * 3).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match=r"`loss.backward\(\)`.*inside a ZO step's objective.*return loss") as info:
        evaluate_loss(objective)
    assert "does not require grad" in str(info.value.__cause__)  # torch's error stays chained for a debugger
    with pytest.raises(RuntimeError, match="^other$"):  # any other error of the objective passes through as it is
        evaluate_loss(lambda: (_ for _ in ()).throw(RuntimeError("other")))


def test_clipping_bounds_the_projected_gradient():
    e = DirectionalEstimate(seed=1, loss_plus=torch.tensor(1.5), loss_minus=torch.tensor(0.5))
    assert e.projected_gradient(1e-3) == pytest.approx(500.0)
    assert e.projected_gradient(1e-3, clip=0.5) == 0.5
    assert DirectionalEstimate(seed=1, loss_plus=torch.tensor(0.5), loss_minus=torch.tensor(1.5)).projected_gradient(
        1e-3, clip=0.5) == -0.5


def test_a_normalizer_replaces_eps_in_the_projected_gradient():
    e = DirectionalEstimate(seed=1, loss_plus=torch.tensor(3.0), loss_center=torch.tensor(1.0), kind="one-sided",
                            normalizer=4.0)
    assert e.projected_gradient(1e-3) == 0.5 and e.projected_gradient(1.0) == 0.5
