"""Every registered structure rule says how it was built (``config()``), and the registry rebuilds it from that
alone."""

from __future__ import annotations

import pytest
import torch

from zolightning.structures import (
    AllTensors,
    BlockSelection,
    DenseDirections,
    ExcludedDirections,
    LayerSubset,
    LowRankDirections,
    SparseDirections,
    StructureRule,
)
from zolightning.structures.registry import STRUCTURES, create_rule

# One rule per registered name, built with arguments other than the defaults wherever there are some.
EXAMPLES = {
    "all": lambda: AllTensors(),
    "dense": lambda: DenseDirections("rademacher"),
    "bcd": lambda: BlockSelection("linear", order="random-permutation", steps_per_block=2, seed=5),
    "lezo": lambda: LayerSubset(2, always_active=["2"], seed=None, granularity="linear"),
    "sparse": lambda: SparseDirections(0.5, "random", refresh_interval=3, scope="per-tensor", storage="recompute",
                                       seed=11, distribution="rademacher"),
    "low-rank": lambda: LowRankDirections(rank=3, refresh_interval=7, mode="subzero"),
    "excluded": lambda: ExcludedDirections(LowRankDirections(rank=1, seed=4), exclude=[r"^2\."]),
}


def plain(config: dict) -> dict:
    return {k: plain(v.config()) if isinstance(v, StructureRule) else v for k, v in config.items()}


def test_every_registered_rule_has_an_example():
    assert set(EXAMPLES) == set(STRUCTURES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_rule_rebuilt_from_its_config_has_the_same_config_even_after_it_was_bound(name):
    rule = EXAMPLES[name]()
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    given = plain(rule.config())
    rule.bind(model, 99, "gaussian")  # the step's seed and noise: used, never copied into the rule's arguments
    assert plain(rule.config()) == given
    rebuilt = create_rule(name, **rule.config())
    assert type(rebuilt) is type(rule) and plain(rebuilt.config()) == given


def test_an_override_is_used_and_the_steps_seed_otherwise():
    own, shared = BlockSelection("linear", order="uniform", seed=5), BlockSelection("linear", order="uniform")
    model = torch.nn.Sequential(*(torch.nn.Linear(2, 2) for _ in range(6)))
    own.bind(model, 99, "gaussian")
    shared.bind(model, 99, "gaussian")
    assert own.seed_in_use() == 5 and shared.seed_in_use() == 99 and shared.config()["seed"] is None
    assert [own.active_index(t) for t in range(12)] != [shared.active_index(t) for t in range(12)]


def test_a_rule_of_ones_own_without_config_is_told_the_fix():
    class Mine(AllTensors):
        config = StructureRule.config

    with pytest.raises(NotImplementedError, match="implement it"):
        Mine().config()
