import copy

import pytest
import torch

from zolightning.functional.structure import TrainableTensor, dense_structure
from zolightning.optim import ZOSGD


def test_zosgd_descends_on_a_quadratic(quadratic):
    matrix, start = quadratic
    x = torch.nn.Parameter(start.clone())
    optimizer = ZOSGD([x], lr=0.02, eps=1e-3)
    loss = lambda: 0.5 * x @ matrix @ x  # noqa: E731
    initial = float(loss())
    for _ in range(1500):
        optimizer.step(loss)
    assert float(loss()) < 1e-3 * initial


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_applied_update_is_along_the_perturbation_direction(momentum):
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 4)
    x = torch.randn(16, 5)
    optimizer = ZOSGD(layer.named_parameters(), lr=0.1, eps=1e-3, momentum=momentum)
    loss = lambda: layer(x).pow(2).mean()  # noqa: E731
    plan = dense_structure().plan([TrainableTensor(n, p, 1e-3) for n, p in layer.named_parameters()], 0)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer.step(loss, seed=1234, plan=plan)
    g = optimizer.last_estimate.projected_gradient(1e-3)
    assert g != 0
    for entry, b in zip(plan, before):
        z = entry.direction_at(1234)  # materialized only here, in the test
        torch.testing.assert_close(entry.param - b, -0.1 * g * z, rtol=1e-4, atol=1e-6)


def test_weight_decay_skips_biases_and_norm_weights():
    layer = torch.nn.Linear(3, 3)
    optimizer = ZOSGD(layer.parameters(), lr=0.5, eps=1e-3, weight_decay=0.1)
    bias_before, weight_before = layer.bias.detach().clone(), layer.weight.detach().clone()
    # constant loss: g = 0; an exact restore leaves decay as the only move
    optimizer.step(lambda: torch.tensor(1.0), restore="snapshot")
    torch.testing.assert_close(layer.bias, bias_before, rtol=0, atol=0)
    torch.testing.assert_close(layer.weight, weight_before * (1 - 0.05))


def test_frozen_parameters_are_never_touched():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    model[0].requires_grad_(False)
    frozen = [p.detach().clone() for p in model[0].parameters()]
    optimizer = ZOSGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    for _ in range(3):
        optimizer.step(lambda: model(x).pow(2).mean())
    assert all(torch.equal(p, f) for p, f in zip(model[0].parameters(), frozen))


def test_state_exists_only_with_momentum():
    layer = torch.nn.Linear(3, 2)
    plain = ZOSGD(layer.parameters(), lr=0.1)
    plain.step(lambda: layer.weight.sum())
    assert len(plain.state) == 0
    with_momentum = ZOSGD(layer.parameters(), lr=0.1, momentum=0.9)
    with_momentum.step(lambda: layer.weight.sum())
    assert {id(p) for p in with_momentum.state} == {id(layer.weight), id(layer.bias)}


def test_a_reloaded_copy_runs_in_lock_step_with_the_original():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 2)
    x = torch.randn(10, 6)
    optimizer = ZOSGD(model.parameters(), lr=0.05, eps=1e-3, momentum=0.9, seed=42)
    for _ in range(3):
        optimizer.step(lambda: model(x).pow(2).mean())
    twin = copy.deepcopy(model)
    twin_optimizer = ZOSGD(twin.parameters(), lr=0.05, eps=1e-3, momentum=0.9, seed=42)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for _ in range(4):
        optimizer.step(lambda: model(x).pow(2).mean())
        twin_optimizer.step(lambda: twin(x).pow(2).mean())
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_a_lr_scheduler_drives_zosgd():
    layer = torch.nn.Linear(2, 2)
    optimizer = ZOSGD(layer.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    optimizer.step(lambda: layer.weight.sum())
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"lr": -1.0}, "`lr`"), ({"eps": 0.0}, "`eps`"), ({"eps": -1e-3}, "`eps`"), ({"momentum": 1.0}, "`momentum`"),
     ({"weight_decay": -0.1}, "`weight_decay`")],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ZOSGD(torch.nn.Linear(2, 2).parameters(), **kwargs)


def test_step_without_closure_says_what_is_needed():
    with pytest.raises(ValueError, match="closure"):
        ZOSGD(torch.nn.Linear(2, 2).parameters()).step()


def test_a_dense_step_draws_noise_three_times_not_four(monkeypatch):
    """Restore and update share one draw: +εz, −2εz, then (restore + update) per tensor."""
    import zolightning.functional.directions as directions

    drawn = []
    original = directions.fill_noise_
    monkeypatch.setattr(directions, "fill_noise_", lambda out, *a, **k: drawn.append(out.numel()) or original(out, *a, **k))
    layer = torch.nn.Linear(7, 5)
    optimizer = ZOSGD(layer.parameters(), lr=0.1)
    optimizer.step(lambda: layer.weight.pow(2).sum(), restore="arithmetic")
    assert sum(drawn) == 3 * (7 * 5 + 5)


def test_a_skipped_non_finite_step_still_restores_the_weights():
    layer = torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer = ZOSGD(layer.parameters(), lr=0.1)
    optimizer.step(lambda: torch.tensor(float("inf")), restore="arithmetic")
    for p, b in zip(layer.parameters(), before):
        torch.testing.assert_close(p, b, rtol=0, atol=1e-6)


def test_several_directions_update_along_their_average():
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    x = torch.randn(12, 5)
    optimizer = ZOSGD(layer.named_parameters(), lr=0.1, eps=1e-3)
    plan = dense_structure().plan([TrainableTensor(n, p, 1e-3) for n, p in layer.named_parameters()], 0)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer.step(lambda: layer(x).pow(2).mean(), seed=[11, 22, 33], plan=plan)
    estimates = optimizer.last_estimates
    assert [e.seed for e in estimates] == [11, 22, 33]
    for entry, b in zip(plan, before):
        average = sum(e.projected_gradient(1e-3) * entry.direction_at(e.seed) for e in estimates) / 3
        torch.testing.assert_close(entry.param - b, -0.1 * average, rtol=1e-4, atol=1e-6)


def test_the_variance_of_the_estimate_falls_as_one_over_q():
    """Measured: the averaged estimate's squared error against the true gradient shrinks about as 1/q."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(10, 1)
    x = torch.randn(32, 10)
    loss = lambda: layer(x).pow(2).mean()  # noqa: E731
    loss().backward()
    true = torch.cat([p.grad.flatten() for p in layer.parameters()])
    error = {}
    for q in (1, 4):
        squared = []
        for trial in range(150):
            optimizer = ZOSGD(layer.parameters(), lr=0.0, eps=1e-4)
            plan = optimizer.dense_plan()
            optimizer.step(loss, seed=[trial * 10 + k for k in range(q)], plan=plan, restore="snapshot")
            estimate = torch.cat([
                sum(e.projected_gradient(1e-4) * entry.direction_at(e.seed) for e in optimizer.last_estimates).flatten() / q
                for entry in plan
            ])
            squared.append(float((estimate - true).pow(2).sum()))
        error[q] = sum(squared) / len(squared)
    assert 2.5 < error[1] / error[4] < 6.0, error


def test_a_gather_hook_makes_every_gathered_direction_count():
    layer = torch.nn.Linear(4, 2)
    optimizer = ZOSGD(layer.parameters(), lr=0.1)
    other = []

    def gather(local):
        from zolightning.functional.estimators import TwoPointEstimate

        remote = TwoPointEstimate(seed=999, loss_plus=torch.tensor(2.0), loss_minus=torch.tensor(1.0))
        other.append(remote)
        return [*local, remote]

    optimizer.step(lambda: layer.weight.sum(), seed=5, gather=gather)
    assert [e.seed for e in optimizer.last_estimates] == [5, 999]
