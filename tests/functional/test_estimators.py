import pytest
import torch

from zolightning.functional.estimators import (
    TwoPointEstimate,
    accumulate_gradient_,
    average_estimates,
    evaluate_loss,
    two_point_estimate,
)
from zolightning.functional.noise import step_seed
from zolightning.functional.structure import TrainableTensor, dense_structure


def small_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))


def plan_for(model: torch.nn.Module, eps: float = 1e-3, distribution: str = "gaussian"):
    tensors = [TrainableTensor(n, p, eps) for n, p in model.named_parameters() if p.requires_grad]
    return dense_structure(distribution).plan(tensors, step=0)


def batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(32, 6, generator=generator), torch.randint(0, 3, (32,), generator=generator)


def test_averaged_two_point_estimates_align_with_the_backprop_gradient():
    model = small_mlp()
    x, y = batch()
    loss_fn = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    loss_fn().backward()
    true_gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    plan = plan_for(model)
    total = torch.zeros_like(true_gradient)
    directions = 3000
    for k in range(directions):
        seed = step_seed(0, k)
        estimate = two_point_estimate(loss_fn, plan, seed)
        z = torch.cat([entry.direction_at(seed).flatten() for entry in plan])
        total += estimate.projected_gradient(1e-3) * z
    cosine = torch.nn.functional.cosine_similarity(total / directions, true_gradient, dim=0)
    assert cosine >= 0.9, f"cosine {float(cosine):.3f}"


def test_weights_come_back_within_fp32_rounding_after_the_two_forwards():
    model = small_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batch()
    estimate = two_point_estimate(lambda: torch.nn.functional.cross_entropy(model(x), y), plan_for(model), seed=11)
    assert estimate.loss_plus != estimate.loss_minus
    for p, b in zip(model.parameters(), before):
        torch.testing.assert_close(p, b, rtol=0, atol=4 * torch.finfo(torch.float32).eps * float(b.abs().max() + 1))


def test_snapshot_restore_is_bitwise_exact_in_bfloat16():
    model = small_mlp().to(torch.bfloat16)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batch()
    loss_fn = lambda: torch.nn.functional.cross_entropy(model(x.bfloat16()).float(), y)  # noqa: E731
    two_point_estimate(loss_fn, plan_for(model, eps=1e-2), seed=5, restore="auto")
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("restore", ["arithmetic", "snapshot"])
def test_an_exception_in_the_second_forward_leaves_the_weights_unperturbed(restore):
    model = small_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batch()
    calls = []

    def failing_loss():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom in the second forward")
        return torch.nn.functional.cross_entropy(model(x), y)

    with pytest.raises(RuntimeError, match="second forward"):
        two_point_estimate(failing_loss, plan_for(model), seed=3, restore=restore)
    for p, b in zip(model.parameters(), before):
        torch.testing.assert_close(p, b, rtol=0, atol=1e-6)


def test_gradient_written_into_grad_is_the_projected_gradient_times_z():
    model = small_mlp()
    x, y = batch()
    plan = plan_for(model)
    estimate = two_point_estimate(lambda: torch.nn.functional.cross_entropy(model(x), y), plan, seed=9)
    accumulate_gradient_(plan, estimate)
    for entry in plan:
        expected = estimate.projected_gradient(1e-3) * entry.direction_at(9)
        torch.testing.assert_close(entry.param.grad, expected)


def test_reduce_sees_both_losses_and_its_result_is_used():
    model = small_mlp()
    x, y = batch()
    seen = []

    def reduce(losses):
        seen.append(losses.clone())
        return losses * 0 + torch.tensor([2.0, 1.0])

    estimate = two_point_estimate(lambda: torch.nn.functional.cross_entropy(model(x), y), plan_for(model), 1, reduce=reduce)
    assert seen[0].shape == (2,)
    assert float(estimate.difference) == 0.5


def test_a_non_scalar_loss_is_refused_with_the_fix():
    with pytest.raises(TypeError, match="mean"):
        evaluate_loss(lambda: torch.ones(3))
    assert float(evaluate_loss(lambda: 2)) == 2.0


def test_a_one_sided_estimate_evaluates_theta_then_theta_plus_eps_z():
    model = small_mlp()
    x, y = batch()
    loss_fn = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    plan = plan_for(model)
    at_theta = float(loss_fn().detach())
    estimate = two_point_estimate(loss_fn, plan, seed=3, one_sided=True)
    two_sided = two_point_estimate(loss_fn, plan, seed=3)
    assert float(estimate.loss_center) == at_theta and estimate.loss_minus is None
    assert float(estimate.difference) == pytest.approx(float(estimate.loss_plus) - at_theta)
    assert float(estimate.loss_plus) == float(two_sided.loss_plus)
    # Both estimate the same directional derivative, up to the one-sided O(ε) bias.
    assert float(estimate.difference) == pytest.approx(float(two_sided.difference), rel=0.05)


def test_a_centred_estimate_also_measures_the_curvature_along_z():
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    scales = torch.tensor([3.0, 0.5])
    plan = dense_structure().plan([TrainableTensor("x", x, 1e-2)], 0)
    estimate = two_point_estimate(lambda: 0.5 * (scales * x * x).sum(), plan, seed=9, center=True)
    z = plan[0].direction_at(9)
    # For a quadratic the second difference is exactly ε²·zᵀHz.
    assert float(estimate.second_difference) == pytest.approx(1e-4 * float((scales * z * z).sum()), rel=1e-3)
    assert float(estimate.loss) == pytest.approx(float(0.5 * (scales * x * x).sum()))


def test_a_deferred_one_sided_restore_is_completed_by_the_caller():
    model = small_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batch()
    plan = plan_for(model)
    estimate = two_point_estimate(
        lambda: torch.nn.functional.cross_entropy(model(x), y), plan, seed=2, one_sided=True, defer_restore=True
    )
    assert estimate.pending_offset == 1.0
    for entry, b in zip(plan, before):
        entry.param.data.add_(entry.direction_at(2), alpha=-entry.eps)
        torch.testing.assert_close(entry.param.detach(), b, rtol=0, atol=1e-6)


def test_averaging_micro_batch_estimates_equals_the_estimate_on_their_union():
    model = small_mlp()
    x, y = batch()
    plan = plan_for(model)
    loss = lambda a, b: (lambda: torch.nn.functional.cross_entropy(model(x[a:b]), y[a:b]))  # noqa: E731
    halves = [two_point_estimate(loss(0, 16), plan, seed=4), two_point_estimate(loss(16, 32), plan, seed=4)]
    whole = two_point_estimate(loss(0, 32), plan, seed=4)
    merged = average_estimates(halves)
    assert float(merged.difference) == pytest.approx(float(whole.difference), rel=1e-3, abs=1e-6)
    assert float(merged.loss) == pytest.approx(float(whole.loss), rel=1e-6)
    with pytest.raises(ValueError, match="same direction"):
        average_estimates([halves[0], two_point_estimate(loss(0, 16), plan, seed=5)])


def test_clipping_bounds_the_projected_gradient_and_its_gradient():
    model = small_mlp()
    x, y = batch()
    plan = plan_for(model)
    estimate = two_point_estimate(lambda: 100 * torch.nn.functional.cross_entropy(model(x), y), plan, seed=8)
    assert abs(estimate.projected_gradient(1e-3)) > 0.5
    assert abs(estimate.projected_gradient(1e-3, clip=0.5)) == 0.5
    accumulate_gradient_(plan, estimate, clip=0.5)
    for entry in plan:
        torch.testing.assert_close(entry.param.grad.abs(), 0.5 * entry.direction_at(8).abs())


def test_values_round_trip_for_every_kind():
    for kind, fields in [("two-sided", dict(loss_plus=1.0, loss_minus=2.0)), ("one-sided", dict(loss_plus=1.0, loss_center=3.0)),
                         ("forward", dict(loss_plus=None, loss_center=3.0, derivative=0.25))]:
        tensors = {k: (None if v is None else torch.tensor(v)) for k, v in fields.items()}
        estimate = TwoPointEstimate(seed=1, kind=kind, **tensors)
        again = TwoPointEstimate.from_values(estimate.values(), 1, kind, center="loss_center" in fields)
        assert float(again.difference) == float(estimate.difference) and float(again.loss) == float(estimate.loss)
