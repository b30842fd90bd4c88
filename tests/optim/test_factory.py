"""Every registered optimizer, driven from the registry: descent, lock-step resume, state only where active."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from tests.structures.test_base import STRUCTURES, stack, structured
from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.optim import OPTIMIZERS, ZOSGD, ZOAdam, create_optimizer
from zolightning.structures import BlockSelection

# Learning rates per problem, found once by a sweep; every other setting is the registry's default.
QUADRATIC_LR = {"zo-sgd": 0.02, "zo-sgd-mmt": 0.003, "zo-sgd-sign": 0.01, "zo-sgd-cons": 0.02, "zo-adam": 0.02,
                "hizoo": 0.02}
TRANSFORMER_LR = {"zo-sgd": 0.025, "zo-sgd-mmt": 0.004, "zo-sgd-sign": 0.006, "zo-sgd-cons": 0.05, "zo-adam": 0.005,
                  "hizoo": 0.025}
EXTRA = {"hizoo": {"hessian_smoothing": 1e-3}}
# What each optimizer is documented to cost (README, "The optimizer family"): fp32 state bytes per element of each
# tensor that has been active, and forwards per step with the default estimator.
STATE_BYTES = {"zo-sgd": 0, "zo-sgd-mmt": 4, "zo-sgd-sign": 0, "zo-sgd-cons": 0, "zo-adam": 8, "hizoo": 4}
FORWARDS = {"zo-sgd": 2, "zo-sgd-mmt": 2, "zo-sgd-sign": 2, "zo-sgd-cons": 5, "zo-adam": 2, "hizoo": 3}


def test_the_tables_name_every_registered_optimizer():
    assert set(QUADRATIC_LR) == set(TRANSFORMER_LR) == set(STATE_BYTES) == set(FORWARDS) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_descends_on_a_quadratic(name, quadratic):
    matrix, start = quadratic
    x = torch.nn.Parameter(start.clone())
    optimizer = create_optimizer(name, [x], lr=QUADRATIC_LR[name], eps=1e-3, **EXTRA.get(name, {}))
    loss = lambda: 0.5 * x @ matrix @ x  # noqa: E731
    initial = float(loss().detach())
    for _ in range(1000):
        optimizer.step(loss)
    assert float(loss().detach()) < 0.05 * initial


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)
    return BertForSequenceClassification(config).eval()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_lowers_the_loss_of_a_small_transformers_model(name):
    model = tiny_bert()
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (16, 8), generator=generator)
    labels = torch.randint(0, 2, (16,), generator=generator)
    loss = lambda: model(input_ids=ids, labels=labels).loss  # noqa: E731
    optimizer = create_optimizer(name, model.named_parameters(), lr=TRANSFORMER_LR[name], eps=1e-3)
    with torch.no_grad():
        initial = float(loss())
    for _ in range(100):
        optimizer.step(loss)
    with torch.no_grad():
        assert float(loss()) < 0.95 * initial


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_reloaded_copy_runs_in_lock_step_with_the_original(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x = torch.randn(10, 6)
    settings = dict(lr=0.01, eps=1e-3, **EXTRA.get(name, {}))
    optimizer = create_optimizer(name, model.parameters(), **settings)
    optimizer.use_engine(StepEngine(ZOConfig(seed=42)))
    for _ in range(3):
        optimizer.step(lambda: model(x).pow(2).mean())
    twin = copy.deepcopy(model)
    twin_optimizer = create_optimizer(name, twin.parameters(), **settings)
    twin_optimizer.use_engine(StepEngine(ZOConfig(seed=42)))
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for _ in range(4):
        optimizer.step(lambda: model(x).pow(2).mean())
        twin_optimizer.step(lambda: twin(x).pow(2).mean())
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_exists_only_for_tensors_that_have_been_active(name):
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    optimizer = create_optimizer(name, model.named_parameters(), lr=0.01, eps=1e-3)
    engine = structured(optimizer, BlockSelection(blocks=[["0.weight", "0.bias"], ["1.weight", "1.bias"]]), model)
    assert [entry.name for entry in engine.plan(0)] == ["0.weight", "0.bias"]  # the first layer only
    optimizer.step(lambda: model(torch.ones(2, 3)).sum(), step=0)
    assert {id(p) for p in optimizer.state} <= {id(model[0].weight), id(model[0].bias)}
    assert bool(optimizer.state) == (STATE_BYTES[name] > 0)
    for param, state in optimizer.state.items():
        stored = sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v) and v.dim() > 0)
        assert stored == STATE_BYTES[name] * param.numel()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_step_runs_the_registered_number_of_forwards(name):
    layer = torch.nn.Linear(3, 1)
    calls = []

    def loss():
        calls.append(1)
        return layer(torch.ones(2, 3)).pow(2).sum()

    create_optimizer(name, layer.parameters(), lr=0.01).step(loss)
    assert len(calls) == FORWARDS[name]


def test_names_are_normalised_and_registry_defaults_apply():
    layer = torch.nn.Linear(2, 2)
    optimizer = create_optimizer("ZO-SGD_MMT", layer.parameters(), lr=0.1)
    assert isinstance(optimizer, ZOSGD) and optimizer.defaults["momentum"] == 0.9
    assert isinstance(create_optimizer("zo_adam", layer.parameters()), ZOAdam)


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="zo-adam"):
        create_optimizer("adamw", torch.nn.Linear(2, 2).parameters())


@pytest.mark.parametrize("structure_name", ["bcd", "sparse-small", "lozo", "subzero"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_composes_with_each_structure(name, structure_name):
    model = stack()
    optimizer = create_optimizer(name, model.named_parameters(), lr=1e-3, eps=1e-3)
    engine = structured(optimizer, STRUCTURES[structure_name](), model, seed=100)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(0))
    for step in range(3):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer.step(lambda: model(x).pow(2).mean(), step=step)
        active = {entry.name for entry in engine.plan(step)}
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed <= active and changed  # inactive tensors untouched, something moved
        assert all(torch.isfinite(p).all() for p in model.parameters())
        assert {id(p) for p in optimizer.state} <= {id(p) for p in model.parameters()}
