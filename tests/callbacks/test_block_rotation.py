import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel

import torch

from tests.callbacks.structure_helpers import LayeredModel, StepRecorder, assert_resume_is_exact, fit, weights
from tests.conftest import trainer_kwargs
from zolightning.callbacks import BlockRotation, LowRankRefresh, SparsityMask

BLOCKS = [{"stem.weight", "stem.bias"}] + [
    {f"layers.{i}.0.weight", f"layers.{i}.0.bias", f"layers.{i}.2.weight", f"layers.{i}.2.bias"} for i in range(3)
] + [{"head.weight", "head.bias"}]


def test_each_step_updates_exactly_the_active_block_and_logs_it():
    recorder = StepRecorder()
    rotation = BlockRotation(order="cyclic")
    fit([rotation, recorder], steps=7)
    assert [b.name for b in rotation.blocks] == ["stem", "layers.0", "layers.1", "layers.2", "head"]
    assert recorder.changed == [BLOCKS[step % 5] for step in range(7)]  # the rest is bitwise unchanged
    assert recorder.blocks == [float(step % 5) for step in range(7)]


def test_steps_per_block_and_lr_scales():
    recorder = StepRecorder()
    rotation = BlockRotation(order="descending", steps_per_block=2)
    fit([rotation, recorder], steps=4, model_factory=lambda: LayeredModel(lr_scales={"^head": 0.0}))
    # Blocks 4 (head, lr scale 0: estimated but not moved) for two steps, then block 3 for two.
    assert recorder.changed == [set(), set(), BLOCKS[3], BLOCKS[3]]


@pytest.mark.parametrize("order", ["cyclic", "random-permutation", "size-weighted"])
def test_resuming_mid_rotation_continues_the_same_schedule(order, tmp_path):
    assert_resume_is_exact(lambda: [BlockRotation(order=order, steps_per_block=2)], tmp_path)


def test_blocks_are_restored_by_parameter_name_from_the_checkpoint():
    source = BlockRotation(granularity="parameter")
    fit([source], steps=1)
    state = source.state_dict()
    target = BlockRotation(granularity="layer")
    target.load_state_dict(state)  # before setup: applied when the fit sets it up
    recorder = StepRecorder()
    fit([target, recorder], steps=2)
    assert len(target.blocks) == 16 and recorder.changed[1] == {"stem.bias"}


def test_a_sparse_mask_composes_inside_the_active_block():
    recorder = StepRecorder()
    model, _ = fit([BlockRotation(), SparsityMask(sparsity=0.5, criterion="random"), recorder], steps=2)
    assert recorder.changed[1] <= BLOCKS[1]


def test_structures_that_do_not_compose_are_refused():
    with pytest.raises(ValueError, match="do not compose"):
        fit([SparsityMask(), LowRankRefresh()], steps=1)
    with pytest.raises(ValueError, match="do not compose"):
        fit([BlockRotation(), BlockRotation(granularity="parameter")], steps=1)


def test_a_module_that_is_not_zo_is_refused():
    with pytest.raises(TypeError, match="as_zo"):
        Trainer(max_steps=1, callbacks=[BlockRotation()], **trainer_kwargs()).fit(BoringModel())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"granularity": "row"}, "granularity"), ({"order": "zigzag"}, "order"), ({"steps_per_block": 0}, "steps_per_block"),
     ({"patterns": ["("]}, "regex")],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BlockRotation(**kwargs)


@pytest.mark.parametrize(("restore", "exact"), [("auto", True), ("snapshot", True), ("arithmetic", False)])
def test_the_active_block_comes_back_bitwise_unless_arithmetic_restore_is_asked_for(restore, exact):
    # lr scale 0: every step perturbs and restores its block but moves nothing, so only the restore can change θ.
    model_factory = lambda: LayeredModel(restore=restore, lr_scales={".": 0.0})  # noqa: E731
    start = weights(model_factory())
    model, _ = fit([BlockRotation()], steps=5, model_factory=model_factory)
    assert torch.equal(weights(model), start) == exact
    # The arithmetic restore is still within the documented bound: 2 ulp of |θ| + 2ε|z|.
    torch.testing.assert_close(weights(model), start, rtol=5e-7, atol=1e-8)


def test_user_patterns_define_the_blocks():
    rotation = BlockRotation(patterns=[r"layers\.\d+"])
    fit([rotation], steps=1)
    assert [b.name for b in rotation.blocks] == ["rest", "layers.0", "layers.1", "layers.2"]
    assert rotation.blocks[0].param_names == ("stem.weight", "stem.bias", "head.weight", "head.bias")
