"""``StepEngine.measure`` (and the step it makes with an update): seeds, restore (and its fusion into the update),
cross-rank numbers, q directions, gradient accumulation and query parallelism."""

import copy

import pytest
import torch

from tests.conftest import count_noise_passes

from tests.estimators.helpers import assert_restored, batch, fails_at, small_mlp
from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.engine import collectives
from zolightning.functional.estimate import DirectionalEstimate
from zolightning.functional.noise import step_seed
from zolightning.optim import ZOSGD


def engine_of(optimizer, **config) -> StepEngine:
    engine = StepEngine(ZOConfig(**config))
    optimizer.use_engine(engine)
    return engine


def cross_entropy(model, x, y):
    return lambda: torch.nn.functional.cross_entropy(model(x), y)


def test_the_step_index_seeds_the_directions_and_counts_on():
    layer = torch.nn.Linear(3, 2)
    optimizer = ZOSGD(layer.parameters(), lr=0.1)
    engine = engine_of(optimizer, seed=17, num_directions=2)
    optimizer.step(lambda: layer.weight.sum(), step=7)
    assert [e.seed for e in optimizer.last_estimates] == [step_seed(17, 7, 0), step_seed(17, 7, 1)] == engine.seeds(7)
    assert engine.steps == 8 and engine.last.step == 7
    optimizer.step(lambda: layer.weight.sum())
    assert optimizer.last_estimate.seed == step_seed(17, 8, 0)


@pytest.mark.parametrize("restore", ["arithmetic", "snapshot"])
def test_an_exception_in_the_second_forward_leaves_the_weights_unperturbed(restore):
    model = small_mlp()
    x, y = batch()
    optimizer = ZOSGD(model.named_parameters(), lr=0.1)
    engine = engine_of(optimizer, restore=restore)
    before = [p.detach().clone() for p in model.parameters()]
    calls: list[int] = []
    failing_loss = fails_at(2, model, calls)

    with pytest.raises(RuntimeError, match="second forward"):
        optimizer.step(failing_loss)
    assert_restored(engine.plan(0), before, engine.seeds(0)[0], restore)
    assert engine.steps == 0 and not engine.running
    optimizer.step(cross_entropy(model, x, y))  # the engine steps on after the failure
    assert engine.steps == 1


def test_auto_restores_bitwise_from_a_snapshot_in_bfloat16():
    model = small_mlp().to(torch.bfloat16)
    x, y = batch()
    optimizer = ZOSGD(model.parameters(), lr=0.0, eps=1e-2)  # lr 0: only the restore can move the weights
    engine = engine_of(optimizer, restore="auto")
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step(lambda: torch.nn.functional.cross_entropy(model(x.bfloat16()).float(), y))
    assert optimizer.last_estimate.loss_plus != optimizer.last_estimate.loss_minus
    assert_restored(engine.plan(0), before, optimizer.last_estimate.seed, "snapshot")


def test_the_cross_rank_reduce_sees_every_loss_and_its_result_is_used(monkeypatch):
    model = small_mlp()
    x, y = batch()
    optimizer = ZOSGD(model.parameters(), lr=0.1)
    engine_of(optimizer, num_directions=2)
    seen = []

    def mean_over_ranks(numbers):
        seen.append(numbers.clone())
        return numbers * 0 + torch.tensor([[2.0, 1.0], [1.0, 1.5]])

    monkeypatch.setattr(collectives, "world_size", lambda: 2)
    monkeypatch.setattr(collectives, "mean_over_ranks", mean_over_ranks)
    optimizer.step(cross_entropy(model, x, y))
    assert len(seen) == 1 and seen[0].shape == (2, 2)  # one reduce of every direction's L+ and L−
    first, second = optimizer.last_estimates
    assert float(first.difference) == 0.5 and float(second.difference) == -0.25


def test_accumulated_micro_batches_equal_one_larger_batch():
    model = small_mlp()
    twin = copy.deepcopy(model)
    x, y = batch()
    optimizer = ZOSGD(model.parameters(), lr=0.1)
    engine_of(optimizer, seed=4)
    twin_optimizer = ZOSGD(twin.parameters(), lr=0.1)
    engine_of(twin_optimizer, seed=4)
    before = [p.detach().clone() for p in model.parameters()]

    optimizer.step(cross_entropy(model, x[:16], y[:16]), accumulate=True)
    assert optimizer.engine.steps == 0 and not optimizer.engine.last.updates
    assert_restored(optimizer.engine.plan(0), before, optimizer.last_estimate.seed, "arithmetic")  # nothing applied
    optimizer.step(cross_entropy(model, x[16:], y[16:]))
    twin_optimizer.step(cross_entropy(twin, x, y))

    (merged,), (whole,) = optimizer.last_estimates, twin_optimizer.last_estimates
    assert merged.seed == whole.seed
    assert float(merged.difference) == pytest.approx(float(whole.difference), rel=1e-3, abs=1e-6)
    assert float(merged.loss) == pytest.approx(float(whole.loss), rel=1e-6)
    assert not optimizer.engine.accumulated
    for p, q, b in zip(model.parameters(), twin.parameters(), before):
        torch.testing.assert_close(p - b, q - b, rtol=1e-3, atol=1e-6)


def test_a_dense_step_draws_noise_three_times_not_four(monkeypatch):
    """Restore and update share one draw: +εz, −2εz, then (restore + update) per tensor."""
    drawn = count_noise_passes(monkeypatch)
    layer = torch.nn.Linear(7, 5)
    optimizer = ZOSGD(layer.parameters(), lr=0.1)
    engine_of(optimizer, restore="arithmetic")
    optimizer.step(lambda: layer.weight.pow(2).sum())
    assert sum(drawn) == 3 * (7 * 5 + 5)


def test_a_skipped_non_finite_step_still_restores_the_weights():
    layer = torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer = ZOSGD(layer.parameters(), lr=0.1)
    engine = engine_of(optimizer, restore="arithmetic")
    optimizer.step(lambda: torch.tensor(float("inf")))
    assert not engine.last.updates and engine.nonfinite.total == 1
    assert_restored(engine.plan(0), before, optimizer.last_estimate.seed, "arithmetic")


def test_several_directions_update_along_their_average():
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    x = torch.randn(12, 5)
    optimizer = ZOSGD(layer.named_parameters(), lr=0.1, eps=1e-3)
    engine = engine_of(optimizer, num_directions=3)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer.step(lambda: layer(x).pow(2).mean())
    estimates = optimizer.last_estimates
    assert [e.seed for e in estimates] == engine.seeds(0) and len(set(engine.seeds(0))) == 3
    for entry, b in zip(engine.plan(0), before):
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
        optimizer = ZOSGD(layer.parameters(), lr=0.0, eps=1e-4)
        engine = engine_of(optimizer, num_directions=q, restore="snapshot")
        squared = []
        for trial in range(150):
            optimizer.step(loss, step=trial)
            estimate = torch.cat([
                sum(e.projected_gradient(1e-4) * entry.direction_at(e.seed) for e in optimizer.last_estimates).flatten() / q
                for entry in engine.plan(trial)
            ])
            squared.append(float((estimate - true).pow(2).sum()))
        error[q] = sum(squared) / len(squared)
    assert 2.5 < error[1] / error[4] < 6.0, error


def test_query_parallelism_applies_every_ranks_direction(monkeypatch):
    """Two ranks (this one is rank 0; rank 1's losses are made up): the update is the mean of both directions'
    g·z, with rank 1's direction named by its seed alone."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2)
    x = torch.randn(8, 4)
    optimizer = ZOSGD(layer.named_parameters(), lr=0.1, eps=1e-3)
    engine = engine_of(optimizer, seed=3, query_parallel=True)
    remote = torch.tensor([[1.0, 1.006]])  # rank 1's L+ and L− along its own direction: g ≈ −3
    local = []

    def gather_over_ranks(numbers):
        local.append(numbers.clone())
        return torch.stack([numbers, remote])

    monkeypatch.setattr(collectives, "world_size", lambda: 2)
    monkeypatch.setattr(collectives, "rank", lambda: 0)
    monkeypatch.setattr(collectives, "gather_over_ranks", gather_over_ranks)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer.step(lambda: layer(x).pow(2).mean(), step=5)

    (own_seed,), (other_seed,) = engine.seeds(5, 0), engine.seeds(5, 1)
    assert own_seed != other_seed
    assert len(local) == 1 and local[0].shape == (1, 2)
    assert [e.seed for e in optimizer.last_estimates] == [own_seed, other_seed]
    own = DirectionalEstimate(own_seed, loss_plus=local[0][0, 0], loss_minus=local[0][0, 1]).projected_gradient(1e-3)
    other = DirectionalEstimate(other_seed, loss_plus=remote[0, 0], loss_minus=remote[0, 1]).projected_gradient(1e-3)
    assert other == pytest.approx(-3.0, rel=1e-3) and own != 0
    for entry, b in zip(engine.plan(5), before):
        expected = -0.1 * (own * entry.direction_at(own_seed) + other * entry.direction_at(other_seed)) / 2
        torch.testing.assert_close(entry.param.detach() - b, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rule", ["by_block_size", {"by_block_size": 1.0, r"^0\.": 3.0}])
def test_by_block_size_scales_each_blocks_step_by_the_ratio_of_stable_steps(rule):
    from zolightning.structures import BlockSelection

    def move(lr_scales, step):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
        x, y = torch.randn(8, 6), torch.randint(0, 2, (8,))
        before = [p.detach().clone() for p in model.parameters()]
        optimizer = ZOSGD(list(model.named_parameters()), lr=1e-2)
        engine = engine_of(optimizer, seed=3, lr_scales=lr_scales, prefix_reuse=False, restore="snapshot")
        engine.install(BlockSelection("linear"), module=model)
        optimizer.step(cross_entropy(model, x, y), step=step)  # step 0: block "0" (35 weights); 1: block "2" (12)
        return [(p.detach().double() - b.double()) for p, b in zip(model.parameters(), before)]

    extra = 3.0 if isinstance(rule, dict) else 1.0
    total = 6 * 5 + 5 + 5 * 2 + 2
    for step, active, idle, d, factor in [(0, (0, 1), (2, 3), 35, extra), (1, (2, 3), (0, 1), 12, 1.0)]:
        plain, scaled = move({}, step), move(rule, step)
        for i in active:
            assert plain[i].abs().sum() > 0
            torch.testing.assert_close(scaled[i], plain[i] * factor * (total + 2) / (d + 2), rtol=1e-3, atol=1e-7)
        for i in idle:
            assert scaled[i].abs().sum() == 0


@pytest.mark.parametrize("defer_restore", [False, True])
def test_a_step_is_apply_of_measure_bitwise(defer_restore):
    """``optimizer.step(closure)`` is ``optimizer.apply(engine.measure(closure))``: whether the restore is done by
    ``measure`` or left to the update's noise pass, the weights land on the same bits."""
    x, y = batch()
    model, twin = small_mlp(), small_mlp()
    optimizer = ZOSGD(model.parameters(), lr=0.1, momentum=0.5)
    twin_optimizer = ZOSGD(twin.parameters(), lr=0.1, momentum=0.5)
    engine_of(optimizer, seed=5)
    twin_engine = engine_of(twin_optimizer, seed=5)
    for _ in range(3):
        optimizer.step(cross_entropy(model, x, y))
        twin_optimizer.apply(twin_engine.measure(cross_entropy(twin, x, y), defer_restore=defer_restore))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))


def test_measure_returns_a_value_and_leaves_the_weights_and_the_optimizer_alone():
    x, y = batch()
    model = small_mlp()
    optimizer = ZOSGD(model.named_parameters(), lr=0.1, momentum=0.9)
    engine = engine_of(optimizer, seed=2, num_directions=2)
    before = [p.detach().clone() for p in model.parameters()]
    measurement = engine.measure(cross_entropy(model, x, y), 4)
    assert measurement.seeds == tuple(engine.seeds(4)) and measurement.step == 4 and engine.steps == 5
    assert measurement.numbers.shape == (2, 2) and measurement.updates and measurement.displaced is None
    assert measurement.active == tuple(name for name, _ in model.named_parameters())
    assert [e.seed for e in measurement.estimates] == list(measurement.seeds)
    for seed in measurement.seeds:
        assert_restored(measurement.plan, before, seed, "arithmetic")
    assert len(optimizer.state) == 0  # nothing of the update ran: no momentum buffer yet
    optimizer.apply(measurement)
    assert len(optimizer.state) == len(before)


def test_a_deferred_restore_leaves_theta_at_its_last_point_for_the_update():
    x, y = batch()
    model = small_mlp()
    optimizer = ZOSGD(model.parameters(), lr=0.0)
    engine = engine_of(optimizer, restore="arithmetic")
    before = [p.detach().clone() for p in model.parameters()]
    measurement = engine.measure(cross_entropy(model, x, y), defer_restore=True)
    (seed,) = measurement.seeds
    assert measurement.displaced is not None and measurement.displaced.seed == seed
    for entry, b in zip(measurement.plan, before):  # at θ − εz, the two-sided estimator's last point
        torch.testing.assert_close(entry.param.detach(), b - entry.eps * entry.direction_at(seed))
    optimizer.apply(measurement)  # lr 0: the update only brings θ back
    assert_restored(measurement.plan, before, seed, "arithmetic")
