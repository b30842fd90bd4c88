"""``BlockSelection`` (MeZO-BCD): one block of tensors per step; the others get no noise and are never written."""

import pytest
import torch

from tests.conftest import count_noise_passes

from tests.structures.test_base import STACK_BLOCKS, stack, structured
from zolightning.optim import ZOSGD
from zolightning.structures import BlockSelection


def test_inactive_tensors_are_bitwise_unchanged_and_get_no_noise(monkeypatch):
    drawn = count_noise_passes(monkeypatch)
    model = stack()
    optimizer = ZOSGD(model.named_parameters(), lr=0.05)
    engine = structured(optimizer, BlockSelection(blocks=STACK_BLOCKS), model, restore="snapshot")
    x = torch.randn(4, 6)
    for step in range(3):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        drawn.clear()
        optimizer.step(lambda: model(x).sum(), step=step)
        assert engine.structure.selection.active_index(step) == step  # cyclic
        active = f"{step}."
        for n, p in model.named_parameters():
            assert torch.equal(p, before[n]) != n.startswith(active), n
        active_numel = sum(p.numel() for n, p in model.named_parameters() if n.startswith(active))
        # Three passes with a snapshot restore: +εz, −2εz, the update. Each draws exactly the active block's size.
        assert sum(drawn) == 3 * active_numel


def test_blocks_come_from_the_model_when_not_given():
    model = stack()
    rule = BlockSelection(granularity="linear", order="descending", seed=3)
    optimizer = ZOSGD(model.named_parameters(), lr=0.05)
    structured(optimizer, rule, model, seed=9)
    assert [block.param_names for block in rule.blocks] == [tuple(names) for names in STACK_BLOCKS]
    assert rule.seed == 3  # its own seed wins over the engine's
    with pytest.raises(ValueError, match="`blocks`"):
        BlockSelection().bind(None, 0, "gaussian")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"order": "zigzag"}, "order"), ({"steps_per_block": 0}, "steps_per_block"), ({"granularity": "layers"},
     "granularity"), ({"patterns": [r"layers\.(\d+"]}, "patterns")],
)
def test_bad_block_selection_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BlockSelection(**kwargs)
