"""Real steps before an lr is applied: an lr past ZO-SGD's stability limit is backed off, and everything is put back."""

from __future__ import annotations

import torch

from zolightning.diagnostics.lr_confirmation import confirm_lr
from zolightning.optim import ZOSGD

DIM, CURVATURE = 100, 2.0
LIMIT = 2 / (CURVATURE * (DIM + 2))  # ZO-SGD on ½λ‖x‖² in d dimensions descends in expectation only below this


def quadratic(momentum=0.0):
    x = torch.nn.Parameter(torch.randn(DIM, generator=torch.Generator().manual_seed(0)))
    optimizer = ZOSGD([("x", x)], lr=1e-3, eps=1e-3, momentum=momentum)
    return optimizer, x, lambda t: (lambda: 0.5 * CURVATURE * (x * x).sum())


def test_an_lr_past_the_stability_limit_is_backed_off_until_real_steps_lower_the_loss():
    optimizer, x, objective_for = quadratic()
    result = confirm_lr(optimizer.engine, optimizer, objective_for, 4 * LIMIT, train=[0], judge=[1], steps=40)
    assert result.lr is not None and result.lr <= LIMIT
    assert [lr for lr, _, _ in result.tried][0] == 4 * LIMIT and len(result.tried) >= 3
    first_before, first_after = result.tried[0][1:]
    assert first_after > first_before  # the step the proposal would have taken climbed
    assert result.tried[-1][2] < result.tried[-1][1]


def test_a_stable_lr_is_kept_as_it_is():
    optimizer, x, objective_for = quadratic()
    result = confirm_lr(optimizer.engine, optimizer, objective_for, LIMIT / 4, train=[0], judge=[1], steps=20)
    assert result.lr == LIMIT / 4 and len(result.tried) == 1


def test_weights_optimizer_state_and_engine_counters_are_put_back():
    optimizer, x, objective_for = quadratic(momentum=0.9)
    for _ in range(3):
        optimizer.step(objective_for(0))
    weights, state = x.detach().clone(), {k: v.clone() for k, v in optimizer.state[x].items()}
    steps, lr = optimizer.engine.steps, optimizer.param_groups[0]["lr"]
    confirm_lr(optimizer.engine, optimizer, objective_for, 4 * LIMIT, train=[0], judge=[1], steps=10)
    assert torch.equal(x.detach(), weights)
    assert all(torch.equal(optimizer.state[x][k], v) for k, v in state.items())
    assert optimizer.engine.steps == steps and optimizer.param_groups[0]["lr"] == lr


def test_no_lr_is_confirmed_when_every_back_off_still_climbs():
    optimizer, x, objective_for = quadratic()
    result = confirm_lr(optimizer.engine, optimizer, objective_for, 1e3 * LIMIT, train=[0], judge=[1], steps=20,
                        backoffs=2)
    assert result.lr is None and len(result.tried) == 3


def test_a_fall_in_the_fourth_digit_is_noise_and_confirms_nothing():
    optimizer, x, objective_for = quadratic()
    flat = lambda t: (lambda: 2.302 + 1e-7 * (x * x).sum())  # noqa: E731  (a model at chance, barely moving)
    result = confirm_lr(optimizer.engine, optimizer, flat, LIMIT / 4, train=[0], judge=[1], steps=10, backoffs=1)
    assert result.lr is None and len(result.tried) == 2
