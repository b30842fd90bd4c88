import copy

import pytest
import torch

from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.functional.noise import step_seed
from zolightning.optim import ZOSGD


def test_zosgd_descends_on_a_quadratic(quadratic):
    matrix, start = quadratic
    x = torch.nn.Parameter(start.clone())
    optimizer = ZOSGD([x], lr=0.02, eps=1e-3)
    loss = lambda: 0.5 * x @ matrix @ x  # noqa: E731
    initial = float(loss().detach())
    for _ in range(1500):
        optimizer.step(loss)
    assert float(loss().detach()) < 1e-3 * initial


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_applied_update_is_along_the_perturbation_direction(momentum):
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 4)
    x = torch.randn(16, 5)
    optimizer = ZOSGD(layer.named_parameters(), lr=0.1, eps=1e-3, momentum=momentum)
    loss = lambda: layer(x).pow(2).mean()  # noqa: E731
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer.step(loss, step=1234)
    g = optimizer.last_estimate.projected_gradient(1e-3)
    seed = optimizer.last_estimate.seed
    assert g != 0
    for entry, b in zip(optimizer.engine.plan(1234), before):
        z = entry.direction_at(seed)  # materialized only here, in the test
        torch.testing.assert_close(entry.param - b, -0.1 * g * z, rtol=1e-4, atol=1e-6)


def test_weight_decay_skips_biases_and_norm_weights():
    layer = torch.nn.Linear(3, 3)
    optimizer = ZOSGD(layer.parameters(), lr=0.5, eps=1e-3, weight_decay=0.1)
    optimizer.use_engine(StepEngine(ZOConfig(restore="snapshot")))
    bias_before, weight_before = layer.bias.detach().clone(), layer.weight.detach().clone()
    # constant loss: g = 0; an exact restore leaves decay as the only move
    optimizer.step(lambda: torch.tensor(1.0))
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
    optimizer = ZOSGD(model.parameters(), lr=0.05, eps=1e-3, momentum=0.9)
    optimizer.use_engine(StepEngine(ZOConfig(seed=42)))
    for _ in range(3):
        optimizer.step(lambda: model(x).pow(2).mean())
    twin = copy.deepcopy(model)
    twin_optimizer = ZOSGD(twin.parameters(), lr=0.05, eps=1e-3, momentum=0.9)
    twin_optimizer.use_engine(StepEngine(ZOConfig(seed=42)))
    assert optimizer.state_dict()["zo_engine"]["steps"] == 3
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert twin_optimizer.engine.steps == 3 and twin_optimizer.engine.config.seed == 42
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


def test_zo_seed_is_the_only_seed_of_the_step():
    """An optimizer takes no seed of its own: its engine's ``zo.seed`` seeds the directions."""
    layer = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match="seed"):
        ZOSGD(layer.parameters(), seed=1)  # type: ignore[call-arg]
    optimizer = ZOSGD(layer.parameters(), lr=0.1)
    optimizer.use_engine(StepEngine(ZOConfig(seed=2)))
    optimizer.step(lambda: layer.weight.sum(), step=5)
    assert optimizer.last_estimate.seed == step_seed(2, 5)


def test_with_counter_noise_the_update_draws_no_z_and_folds_the_restore_in(monkeypatch):
    """One pass per tensor: the update regenerates z inside the pass that also undoes the last perturbation, so no
    z is drawn into a buffer after the forwards, and θ lands where θ₀ − lr·(g·z + λθ₀) says."""
    from zolightning.functional.directions import DenseDirection

    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 5)
    x = torch.randn(16, 6)
    optimizer = ZOSGD(layer.named_parameters(), lr=0.05, eps=1e-3, weight_decay=0.1)
    assert optimizer.engine.config.noise == "counter"
    before = [p.detach().clone() for p in layer.parameters()]
    drawn = []
    real_sample = DenseDirection.sample
    monkeypatch.setattr(DenseDirection, "sample", lambda self, *a, **k: drawn.append(1) or real_sample(self, *a, **k))
    optimizer.step(lambda: layer(x).pow(2).mean(), step=7)
    assert drawn == []  # the moves and the update generated z in registers
    monkeypatch.undo()
    g = optimizer.last_estimate.projected_gradient(1e-3)
    for entry, b in zip(optimizer.engine.plan(7), before):
        decay = 0.1 if entry.param.dim() > 1 else 0.0
        expected = b * (1 - 0.05 * decay) - 0.05 * g * entry.direction_at(optimizer.last_estimate.seed)
        torch.testing.assert_close(entry.param.detach(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("noise", ["counter", "torch"])
def test_zo_noise_chooses_the_numbers_of_z(noise):
    from zolightning.functional.counter_noise import counter_noise
    from zolightning.functional.noise import fill_noise_, tensor_seed

    layer = torch.nn.Linear(3, 4, bias=False)
    before = layer.weight.detach().clone()
    optimizer = ZOSGD(layer.named_parameters(), lr=0.1, eps=1e-3)
    optimizer.use_engine(StepEngine(ZOConfig(noise=noise)))
    optimizer.step(lambda: layer.weight.square().sum(), step=3)
    (entry,) = optimizer.engine.plan(3)
    seed = tensor_seed(optimizer.last_estimate.seed, entry.key)
    if noise == "counter":
        z = counter_noise(seed, 0, 0, 12).view(4, 3)
    else:
        z = fill_noise_(torch.empty(4, 3), seed)
    g = optimizer.last_estimate.projected_gradient(1e-3)
    torch.testing.assert_close(layer.weight.detach(), before - 0.1 * g * z, rtol=0, atol=1e-6)


def test_zo_noise_is_checked_by_name():
    with pytest.raises(ValueError, match="zo.noise"):
        ZOConfig(noise="philox")  # type: ignore[arg-type]
