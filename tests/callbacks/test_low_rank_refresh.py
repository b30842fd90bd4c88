import pytest
import torch

from tests.callbacks.structure_helpers import LayeredModel, assert_resume_is_exact, fit, loader
from zolightning.callbacks import LowRankRefresh


@pytest.mark.parametrize("mode", ["lozo", "subzero"])
def test_resume_across_a_refresh_is_exact(mode, tmp_path):
    # Interrupted at step 3, inside the factor window [2, 4): the kept factors must come back from the checkpoint.
    assert_resume_is_exact(lambda: [LowRankRefresh(rank=2, refresh_interval=2, mode=mode)], tmp_path, steps=7)


def test_excluded_matrices_get_dense_noise_and_the_rest_keep_their_factors():
    before = {n: p.detach().clone() for n, p in LayeredModel().named_parameters()}
    model, trainer = fit([LowRankRefresh(rank=1, refresh_interval=5, exclude=[r"^stem\."])], steps=1)
    (callback,) = [c for c in trainer.callbacks if isinstance(c, LowRankRefresh)]
    kept = callback.state_dict()
    assert "stem.weight" not in kept and "layers.0.0.weight" in kept
    moved = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    # One step moves each matrix along its z: rank 1 for a low-rank matrix, full rank (6) for the excluded one.
    assert torch.linalg.matrix_rank(moved["layers.0.0.weight"]) == 1
    assert torch.linalg.matrix_rank(moved["stem.weight"]) == 6


def test_factors_are_kept_per_matrix_and_biases_stay_dense():
    refresh = LowRankRefresh(rank=2, refresh_interval=5, mode="lozo")
    model, _ = fit([refresh], steps=2)
    state = refresh.state_dict()
    matrices = {n for n, p in model.named_parameters() if p.dim() >= 2}
    assert set(state) == matrices
    shapes = dict(model.named_parameters())
    assert all(entry["factors"][0].shape[1] == min(2, *shapes[name].shape) for name, entry in state.items())


def test_low_rank_training_lowers_the_loss():
    x, y = next(iter(loader()))
    before = float(LayeredModel(lr=0.001).training_step((x, y), 0))
    trained, _ = fit([LowRankRefresh(rank=2, refresh_interval=10)], steps=60, model_factory=lambda: LayeredModel(lr=0.001))
    assert float(trained.training_step((x, y), 0)) < 0.7 * before


@pytest.mark.parametrize(("kwargs", "match"), [({"rank": 0}, "rank"), ({"refresh_interval": 0}, "refresh_interval"),
                                               ({"mode": "svd"}, "mode"), ({"exclude": ["[a"]}, "`exclude`")])
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LowRankRefresh(**kwargs)
