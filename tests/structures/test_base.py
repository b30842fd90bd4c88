"""Every structure rule through the whole step: the update moves along the very direction that was perturbed, and
each structure descends. ``STRUCTURES`` and :func:`structured` are shared with ``tests/optim/test_factory.py``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.optim import ZOSGD, ZOOptimizer
from zolightning.structures import (
    AllTensors,
    BlockSelection,
    DenseDirections,
    LowRankDirections,
    PerturbationStructure,
    SparseDirections,
    StructureRule,
    TrainableTensor,
)


def stack() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 3))


STACK_BLOCKS = [["0.weight", "0.bias"], ["1.weight", "1.bias"], ["2.weight", "2.bias"]]
STRUCTURES: dict[str, Callable[[], StructureRule]] = {
    "sparse-small": lambda: SparseDirections(0.5, "small-magnitude", refresh_interval=2),
    "sparse-random-global": lambda: SparseDirections(
        0.5, "random", refresh_interval=3, scope="global", storage="recompute"
    ),
    "sparse-large-global": lambda: SparseDirections(0.7, "large-magnitude", scope="global"),
    "lozo": lambda: LowRankDirections(rank=2, refresh_interval=2, mode="lozo"),
    "subzero": lambda: LowRankDirections(rank=2, refresh_interval=2, mode="subzero"),
    "bcd": lambda: BlockSelection(blocks=STACK_BLOCKS),
}


def structured(optimizer: ZOOptimizer, rule: StructureRule, module: torch.nn.Module | None = None, **config) -> StepEngine:
    """An engine with ``rule`` installed (bound to ``module`` and the config's seed) and ``optimizer`` as its update."""
    engine = StepEngine(ZOConfig(**config), module=module)
    engine.install(rule)
    optimizer.use_engine(engine)
    return engine


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_every_structure_updates_along_the_direction_it_perturbed_including_refresh_steps(name):
    """Record the move actually applied during the first forward, and compare it with the update's move."""
    model = stack()
    optimizer = ZOSGD(model.named_parameters(), lr=0.05, eps=1e-3)
    structured(optimizer, STRUCTURES[name](), model, seed=1000, restore="snapshot")
    x = torch.randn(16, 6)
    for step in range(6):  # refresh intervals 2 and 3: steps 0, 2, 3, 4 are refresh steps
        before = [p.detach().clone() for p in model.parameters()]
        perturbed: list[list[torch.Tensor]] = []

        def loss():
            if not perturbed:
                perturbed.append([p.detach().clone() for p in model.parameters()])
            return model(x).pow(2).mean()

        optimizer.step(loss, step=step)
        g = optimizer.last_estimate.projected_gradient(1e-3)
        for p, b, q in zip(model.parameters(), before, perturbed[0]):
            applied_direction = (q - b) / 1e-3
            update_direction = (p - b) / (-0.05 * g)
            torch.testing.assert_close(update_direction, applied_direction, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_every_structure_descends_on_a_quadratic(name, quadratic):
    # The minimum is away from 0, so that magnitude masks (which pick by |θ|) are not pinned to the optimum's zeros.
    matrix, target = quadratic
    model = torch.nn.Module()
    model.weight = torch.nn.Parameter(torch.zeros(4, 5))
    model.bias = torch.nn.Parameter(torch.zeros(3))
    offset = lambda: model.weight.reshape(-1) - target  # noqa: E731
    loss = lambda: 0.5 * offset() @ matrix @ offset() + (model.bias - 1).pow(2).sum()  # noqa: E731
    rule = BlockSelection(blocks=[["weight"], ["bias"]]) if name == "bcd" else STRUCTURES[name]()
    optimizer = ZOSGD(model.named_parameters(), lr=0.02, eps=1e-3)
    structured(optimizer, rule, model)
    with torch.no_grad():
        initial = float(loss())
    for _ in range(800):
        optimizer.step(loss)
    # Magnitude masks are biased by design (coordinates whose |θ| never ranks among the perturbed ones stay put), so
    # they only have to descend; every unbiased structure has to converge. Large-magnitude masks from θ = 0 keep
    # perturbing the coordinates that grew first: over zo.seed 0-9 they end at 0.36-0.82 of the initial loss (small
    # magnitude: 0.15-0.30), so 0.5 held for them only on lucky seeds.
    bound = 0.05
    if isinstance(rule, SparseDirections) and rule.criterion != "random":
        bound = 0.9 if rule.criterion == "large-magnitude" else 0.5
    with torch.no_grad():
        assert float(loss()) < bound * initial, float(loss()) / initial


def test_the_default_structure_is_every_tensor_with_dense_noise():
    model = stack()
    structure = PerturbationStructure(distribution="rademacher")
    assert isinstance(structure.selection, AllTensors) and isinstance(structure.directions, DenseDirections)
    tensors = [TrainableTensor(n, p, 1e-3) for n, p in model.named_parameters()]
    plan = structure.plan(tensors, 3)
    assert [entry.name for entry in plan] == [t.name for t in tensors]
    assert all(entry.eps == 1e-3 and entry.lr_scale == 1.0 for entry in plan)
    assert set(plan[0].direction_at(5).unique().tolist()) == {-1.0, 1.0}


def test_two_owners_of_one_part_are_refused_and_a_rule_is_bound_on_install():
    model = stack()
    engine = StepEngine(ZOConfig(seed=7, distribution="rademacher"), module=model)
    first = SparseDirections(0.5, "random")
    engine.install(first)
    # From the engine: the rule left them unset, and keeps them unset (zo.seed and zo.distribution own them).
    assert first.seed_in_use() == 7 and first.distribution_in_use() == "rademacher"
    assert first.config()["seed"] is None and first.config()["distribution"] is None
    engine.install(first)  # the same owner may install again
    with pytest.raises(ValueError, match="both set the perturbation directions"):
        engine.install(LowRankDirections())
    engine.install(BlockSelection(granularity="linear"))  # another part composes
    assert [b.name for b in engine.structure.selection.blocks] == ["0", "1", "2"]
    with pytest.raises(TypeError, match="TensorSelection or DirectionRule"):
        engine.structure.install(object())  # type: ignore[arg-type]
