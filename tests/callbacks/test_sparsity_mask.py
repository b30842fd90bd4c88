import pytest
import torch

from tests.callbacks.structure_helpers import StepRecorder, assert_resume_is_exact, fit
from zolightning.callbacks import SparsityMask


def test_only_masked_coordinates_move():
    class Diff(StepRecorder):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            # Matrices only: LayerNorm weights start tied at 1.0, and a magnitude threshold keeps every tie.
            matrices = [(n, p) for n, p in pl_module.named_parameters() if p.dim() == 2]
            self.changed.append(sum(int((p != self._before[n]).sum()) for n, p in matrices) / sum(p.numel() for _, p in matrices))

    recorder = Diff()
    fit([SparsityMask(sparsity=0.75, criterion="small-magnitude", scope="per-tensor"), recorder], steps=2)
    assert all(0.2 <= fraction <= 0.26 for fraction in recorder.changed), recorder.changed


def test_excluded_tensors_are_perturbed_densely_and_the_rest_stay_masked():
    class Diff(StepRecorder):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            fraction = lambda n, p: float((p != self._before[n]).float().mean())  # noqa: E731
            self.changed.append({n: fraction(n, p) for n, p in pl_module.named_parameters() if p.dim() == 2})

    recorder = Diff()
    fit([SparsityMask(sparsity=0.75, exclude=[r"^head\."]), recorder], steps=2)
    for fractions in recorder.changed:
        assert fractions["head.weight"] == 1.0
        assert all(0.2 <= f <= 0.3 for n, f in fractions.items() if n != "head.weight"), fractions


@pytest.mark.parametrize(
    "options",
    [dict(criterion="small-magnitude", refresh_interval=2, exclude=[r"^stem\."]), dict(criterion="random", refresh_interval=4, storage="recompute"),
     dict(criterion="large-magnitude", scope="global", refresh_interval=5, storage="recompute")],
)
def test_resume_is_exact_with_masks_checkpointed(options, tmp_path):
    assert_resume_is_exact(lambda: [SparsityMask(sparsity=0.5, **options)], tmp_path)


def test_mask_state_is_packed_bits():
    mask = SparsityMask(sparsity=0.5, refresh_interval=10)
    fit([mask], steps=1)
    state = mask.state_dict()
    assert state["refresh_index"] == 0 and state["masks"]
    assert all(entry["bits"].dtype == torch.uint8 for entry in state["masks"].values())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"sparsity": 1.0}, "sparsity"), ({"criterion": "median"}, "criterion"), ({"refresh_interval": 0}, "refresh_interval"),
     ({"scope": "row"}, "scope"), ({"storage": "disk"}, "storage"), ({"exclude": ["("]}, "`exclude`")],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparsityMask(**kwargs)
