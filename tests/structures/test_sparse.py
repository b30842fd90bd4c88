"""``SparseDirections`` (Sparse-MeZO; ZO-Bench's random masks): masked noise, masks kept for a refresh window."""

import pytest
import torch

from zolightning.structures import SparseDirections, TrainableTensor


def test_masked_noise_draws_only_the_perturbed_entries_and_respects_sparsity(monkeypatch):
    import zolightning.functional.masked as masked

    drawn = []
    original = masked.fill_noise_
    monkeypatch.setattr(masked, "fill_noise_", lambda out, *a, **k: drawn.append(out.numel()) or original(out, *a, **k))
    param = torch.randn(40, 50)
    tensor = TrainableTensor("w", param, 1e-3)
    rule = SparseDirections(0.75, "small-magnitude")
    rule.bind(None, 0, "gaussian")
    rule.prepare([tensor], 0)
    z = rule.direction(tensor, 0).sample(param, 7)
    assert drawn == [500] and int((z != 0).sum()) == 500
    assert float(param.abs()[z != 0].max()) <= float(param.abs()[z == 0].min())  # the smallest magnitudes


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: SparseDirections(1.0), "sparsity"),
        (lambda: SparseDirections(0.5, "median"), "criterion"),
        (lambda: SparseDirections(0.5, refresh_interval=0), "refresh_interval"),
    ],
)
def test_bad_sparse_arguments_are_refused_by_name(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()
