"""The forward-gradient estimator: ∇L·εz by forward-mode AD, the weights never moved."""

import pytest
import torch

from zolightning.engine.probe import Probe
from zolightning.estimators import ForwardGradient
from zolightning.functional.perturbation import PerturbationPlan
from zolightning.structures import PerturbationStructure, TrainableTensor


def forward_estimate(root: torch.nn.Module, objective, plan: PerturbationPlan, seed: int):
    estimator = ForwardGradient(root)
    probe = Probe(objective, plan, "arithmetic")
    (estimate,) = estimator.combine(estimator.measure(probe, [seed]), [seed])
    assert probe.evaluations == 1 and probe.position is None
    return estimate


def test_the_forward_gradient_is_the_directional_derivative_along_eps_z_and_moves_nothing():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 2))
    x, y = torch.randn(9, 5), torch.randint(0, 2, (9,))
    plan = PerturbationStructure().plan([TrainableTensor(n, p, 1e-2) for n, p in model.named_parameters()], 0)
    before = [p.detach().clone() for p in model.parameters()]

    estimate = forward_estimate(model, lambda: torch.nn.functional.cross_entropy(model(x), y), plan, seed=17)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = sum((g * entry.direction_at(17) * entry.eps).sum() for g, entry in zip(grads, plan))
    assert estimate.kind == "forward"
    assert float(estimate.difference) == pytest.approx(float(expected), rel=1e-5)
    assert float(estimate.loss) == pytest.approx(float(loss.detach()))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_a_non_scalar_objective_is_refused():
    root = torch.nn.Module()
    root.x = torch.nn.Parameter(torch.ones(3))
    plan = PerturbationStructure().plan([TrainableTensor("x", root.x, 1e-3)], 0)
    with pytest.raises(TypeError, match="scalar"):
        forward_estimate(root, lambda: root.x * 2, plan, seed=1)


def test_the_forward_gradient_needs_the_model():
    with pytest.raises(TypeError, match="ForwardGradient\\(model\\)"):
        ForwardGradient(None)  # type: ignore[arg-type]


def test_the_forward_gradient_works_through_a_transformers_model_with_fused_attention():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    ids, labels = torch.randint(0, 64, (4, 8)), torch.randint(0, 2, (4,))
    plan = PerturbationStructure().plan([TrainableTensor(n, p, 1e-3) for n, p in model.named_parameters()], 0)

    with torch.no_grad():  # as inside a ZO step
        estimate = forward_estimate(model, lambda: model(input_ids=ids, labels=labels).loss, plan, seed=5)
    loss = model(input_ids=ids, labels=labels).loss
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = sum((g * entry.direction_at(5) * entry.eps).sum() for g, entry in zip(grads, plan))
    assert float(estimate.difference) == pytest.approx(float(expected), rel=1e-4)
