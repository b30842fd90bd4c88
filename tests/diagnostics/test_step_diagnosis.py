"""Diagnostics of a ZO step on quadratics, whose gradient is known in closed form."""

from __future__ import annotations

import pytest
import torch

from zolightning.diagnostics import step_diagnosis
from zolightning.diagnostics.step_diagnosis import measure_step
from zolightning.optim import ZOSGD
from zolightning.structures import BlockSelection, SparseDirections

CURVATURE = torch.linspace(0.5, 3.0, 30)


def quadratic_engine(rule=None):
    """f(a, b) = ½ Σ λᵢ xᵢ² over x = (a, b): gradient λ ⊙ x. Two tensors, so that a block is half the model."""
    generator = torch.Generator().manual_seed(0)
    a = torch.nn.Parameter(torch.randn(12, generator=generator))
    b = torch.nn.Parameter(torch.randn(3, 6, generator=generator))
    optimizer = ZOSGD([("a", a), ("b", b)], lr=1e-3, eps=1e-4)
    engine = optimizer.engine
    if rule is not None:
        engine.install(rule)

    def objective():
        x = torch.cat([a.reshape(-1), b.reshape(-1)])
        return 0.5 * (CURVATURE * x * x).sum()

    def gradient():
        return {"a": CURVATURE[:12] * a.detach(), "b": (CURVATURE[12:] * b.detach().reshape(-1)).reshape(3, 6)}

    return engine, objective, gradient, (a, b)


@pytest.mark.parametrize("kind", ["dense", "bcd", "sparse"])
def test_cosine_and_alignment_match_the_closed_form(kind):
    rule = {"dense": None, "bcd": BlockSelection(blocks=[["a"], ["b"]]), "sparse": SparseDirections(0.5, "random")}[kind]
    engine, objective, gradient, params = quadratic_engine(rule)
    step = 1
    result = measure_step(engine, objective, step, extra_directions=3)

    g = gradient()
    full_norm_sq = sum(float(v.square().sum()) for v in g.values())
    plan = engine.plan(step)
    (seed,) = engine.seeds(step)
    z = {entry.name: entry.direction_at(seed) for entry in plan}
    projection = sum(float((z[name] * g[name]).sum()) for name in z)
    z_norm = sum(float(v.square().sum()) for v in z.values()) ** 0.5
    # Central differences are exact on a quadratic: the estimate is (zᵀg)·z, whose cosine with g is ±zᵀg/(‖z‖‖g‖).
    assert result.statistics.cosine == pytest.approx(abs(projection) / (z_norm * full_norm_sq**0.5), rel=1e-3)
    if kind == "dense":
        inside = full_norm_sq
    elif kind == "bcd":
        inside = sum(float(g[entry.name].square().sum()) for entry in plan)
        assert [entry.name for entry in plan] == ["b"]  # step 1 of the cyclic order
    else:
        inside = sum(float(g[e.name][e.direction.mask].square().sum()) for e in plan)
    assert result.statistics.alignment == pytest.approx(inside / full_norm_sq, rel=1e-5)
    assert result.statistics.snr > 1e3  # fp32 central differences at ε = 1e-4 on a quadratic: nearly exact
    assert result.forwards == 2 * 4 + 1


def test_the_weights_come_back_bitwise_and_the_training_stream_is_untouched():
    engine, objective, _, params = quadratic_engine(BlockSelection(blocks=[["a"], ["b"]]))
    before = [p.detach().clone() for p in params]
    measure_step(engine, objective, 0, extra_directions=2)
    assert all(torch.equal(p, q) for p, q in zip(params, before))
    assert engine.steps == 0 and engine.last is None


def test_the_gradient_is_skipped_with_the_reason_when_it_would_not_fit(monkeypatch):
    monkeypatch.setattr(step_diagnosis, "available_memory", lambda device: 16)
    engine, objective, _, _ = quadratic_engine()
    result = measure_step(engine, objective, 0, extra_directions=2)
    assert "MiB are free" in result.gradient_skipped
    assert result.statistics.cosine is None and result.statistics.alignment is None
    assert result.statistics.variance > 0 and result.forwards == 2 * 3


def test_an_unbound_engine_is_refused_with_the_fix():
    from zolightning.engine import StepEngine

    with pytest.raises(RuntimeError, match="no update attached"):
        measure_step(StepEngine(), lambda: torch.zeros(()), 0)


def test_a_custom_direction_without_a_known_subspace_reports_everything_but_the_alignment():
    from zolightning.functional.directions import DenseDirection, TensorDirection
    from zolightning.structures.base import DirectionRule

    class Shifted(TensorDirection):  # a user's direction class that does not say which subspace it spans
        def sample(self, param, seed, noise="torch"):
            return DenseDirection().sample(param, seed) + 1.0

    class ShiftedDirections(DirectionRule):
        def direction(self, tensor, step):
            return Shifted()

    engine, objective, _, _ = quadratic_engine(ShiftedDirections())
    result = measure_step(engine, objective, 0, extra_directions=2)
    assert result.statistics.alignment is None
    assert result.statistics.cosine is not None and result.statistics.snr is not None
