import pytest
import torch

from zolightning.functional.forward_gradient import forward_gradient_estimate
from zolightning.functional.structure import TrainableTensor, dense_structure


def test_the_forward_gradient_is_the_directional_derivative_along_eps_z_and_moves_nothing():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 2))
    x, y = torch.randn(9, 5), torch.randint(0, 2, (9,))
    plan = dense_structure().plan([TrainableTensor(n, p, 1e-2) for n, p in model.named_parameters()], 0)
    before = [p.detach().clone() for p in model.parameters()]

    def objective(params):
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, dict(params), (x,)), y)

    estimate = forward_gradient_estimate(objective, plan, seed=17)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = sum((g * entry.direction_at(17) * entry.eps).sum() for g, entry in zip(grads, plan))
    assert estimate.kind == "forward"
    assert float(estimate.difference) == pytest.approx(float(expected), rel=1e-5)
    assert float(estimate.loss) == pytest.approx(float(loss))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_a_non_scalar_objective_is_refused():
    x = torch.nn.Parameter(torch.ones(3))
    plan = dense_structure().plan([TrainableTensor("x", x, 1e-3)], 0)
    with pytest.raises(TypeError, match="scalar"):
        forward_gradient_estimate(lambda params: params["x"] * 2, plan, seed=1)


def test_the_forward_gradient_works_through_a_transformers_model_with_fused_attention():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    ids, labels = torch.randint(0, 64, (4, 8)), torch.randint(0, 2, (4,))
    plan = dense_structure().plan([TrainableTensor(n, p, 1e-3) for n, p in model.named_parameters()], 0)

    def objective(params):
        return torch.func.functional_call(model, dict(params), (), {"input_ids": ids, "labels": labels}).loss

    with torch.no_grad():  # as inside a ZO step
        estimate = forward_gradient_estimate(objective, plan, seed=5)
    loss = model(input_ids=ids, labels=labels).loss
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = sum((g * entry.direction_at(5) * entry.eps).sum() for g, entry in zip(grads, plan))
    assert float(estimate.difference) == pytest.approx(float(expected), rel=1e-4)
