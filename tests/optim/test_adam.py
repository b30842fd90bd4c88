import pytest
import torch

from tests.structures.test_base import structured
from zolightning.optim import ZOAdam
from zolightning.structures import BlockSelection


def two_layers():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))


def by_layer(optimizer, model):
    """One layer per step, cyclic: layer 0 at even steps, layer 1 at odd ones."""
    return structured(optimizer, BlockSelection(blocks=[["0.weight", "0.bias"], ["1.weight", "1.bias"]]), model)


def test_the_first_update_is_adams_normalised_step_along_the_estimate():
    model = two_layers()
    x = torch.randn(8, 4)
    optimizer = ZOAdam(model.named_parameters(), lr=0.01, eps=1e-3)
    engine = by_layer(optimizer, model)
    plan = engine.plan(0)
    assert [entry.name for entry in plan] == ["0.weight", "0.bias"]
    before = [entry.param.detach().clone() for entry in plan]
    optimizer.step(lambda: model(x).pow(2).mean(), step=0)
    g = optimizer.last_estimate.projected_gradient(1e-3)
    seed = optimizer.last_estimate.seed
    for entry, old in zip(plan, before):
        estimate = g * entry.direction_at(seed)
        # Bias-corrected first step: m̂ = ĝ, v̂ = ĝ², so the move is lr·ĝ/(|ĝ| + adam_eps) ≈ lr·sign(ĝ).
        expected = -0.01 * estimate / (estimate.abs() + 1e-8)
        torch.testing.assert_close(entry.param - old, expected, rtol=1e-3, atol=1e-6)


def test_dropping_inactive_state_keeps_moments_for_the_active_block_alone():
    model = two_layers()
    x = torch.randn(8, 4)
    optimizer = ZOAdam(model.named_parameters(), lr=0.01, inactive_state="drop")
    by_layer(optimizer, model)
    for step, block in enumerate([0, 1, 0]):
        optimizer.step(lambda: model(x).pow(2).mean(), step=step)
        assert {id(p) for p in optimizer.state} == {id(p) for p in model[block].parameters()}
    # The block came back: its moments restarted.
    assert int(optimizer.state[model[0].weight]["step"]) == 1


def test_keeping_inactive_state_accumulates_every_block_that_has_been_active():
    model = two_layers()
    x = torch.randn(8, 4)
    optimizer = ZOAdam(model.named_parameters(), lr=0.01)
    by_layer(optimizer, model)
    for step in range(3):  # layers 0, 1, 0
        optimizer.step(lambda: model(x).pow(2).mean(), step=step)
    assert len(optimizer.state) == 4
    assert int(optimizer.state[model[0].weight]["step"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"betas": (1.0, 0.999)}, "`betas`"), ({"adam_eps": 0.0}, "`adam_eps`"), ({"inactive_state": "offload"},
     "`inactive_state`"), ({"lr": -1.0}, "`lr`")],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ZOAdam(torch.nn.Linear(2, 2).parameters(), **kwargs)
