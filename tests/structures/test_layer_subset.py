"""LeZO's layer subsets: how many blocks, which ones, the same ones after a resume, and nothing else touched."""

from __future__ import annotations

import pytest
import torch

from tests.callbacks.structure_helpers import LayeredModel, StepRecorder, assert_resume_is_exact, fit
from zolightning.callbacks import StructureCallback
from zolightning.structures import LayerSubset, TrainableTensor


def bound(rule: LayerSubset) -> LayerSubset:
    rule.bind(LayeredModel(), seed=0, distribution="gaussian")
    return rule


def test_the_subset_has_the_asked_size_and_always_active_blocks_join_every_step():
    rule = bound(LayerSubset(active_layers=2, always_active=["^head$"]))
    assert [b.name for b in rule.blocks] == ["stem", "layers.0", "layers.1", "layers.2", "head"]
    for step in range(20):
        active = rule.active_blocks(step)
        assert 4 in active and len(active) == 3  # the head, and 2 of the 4 others
    assert bound(LayerSubset(active_layers=0.25)).active_count() == 2  # ceil(0.25 · 5)


def test_draws_are_a_seeded_function_of_the_step_and_cover_every_block_evenly():
    rule, twin = bound(LayerSubset(active_layers=1, seed=7)), bound(LayerSubset(active_layers=1, seed=7))
    picks = [rule.active_blocks(step)[0] for step in range(1000)]
    assert picks == [twin.active_blocks(step)[0] for step in range(1000)]
    assert picks != [bound(LayerSubset(active_layers=1, seed=8)).active_blocks(step)[0] for step in range(1000)]
    counts = torch.bincount(torch.tensor(picks), minlength=5)
    assert counts.min() > 150 and counts.max() < 250  # uniform: 200 each


def test_select_keeps_exactly_the_tensors_of_the_active_blocks():
    model = LayeredModel()
    rule = bound(LayerSubset(active_layers=2))
    tensors = [TrainableTensor(n, p, 1e-3) for n, p in model.named_parameters()]
    names = {t.name for t in rule.select(tensors, 3)}
    expected = {n for i in rule.active_blocks(3) for n in rule.blocks[i].param_names}
    assert names == expected and len(expected) < len(tensors)


def test_each_step_updates_only_the_drawn_layers():
    rule = LayerSubset(active_layers=2, seed=1)
    recorder = StepRecorder()
    fit([StructureCallback(rule), recorder], steps=6)
    for step, changed in enumerate(recorder.changed):
        assert changed == {n for i in rule.active_blocks(step) for n in rule.blocks[i].param_names}


def test_resuming_draws_the_same_subsets(tmp_path):
    assert_resume_is_exact(lambda: [StructureCallback(LayerSubset(active_layers=2))], tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"active_layers": 0}, "active_layers"), ({"active_layers": 1.5}, "active_layers"),
     ({"active_layers": True}, "active_layers"), ({"always_active": ["("]}, "always_active"),
     ({"granularity": "row"}, "granularity")],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LayerSubset(**kwargs)
