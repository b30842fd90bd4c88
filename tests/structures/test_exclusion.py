"""``ExcludedDirections``: an inner rule for most tensors, dense noise for the excluded ones."""

import torch

from zolightning.functional.directions import DenseDirection
from zolightning.structures import ExcludedDirections, SparseDirections, TrainableTensor


def test_excluded_tensors_get_dense_noise_and_the_inner_rule_never_sees_them():
    body, head = torch.randn(6, 4), torch.randn(3, 4) * 100  # the head's magnitudes would dominate a global threshold
    tensors = [TrainableTensor("body.weight", body, 1e-3), TrainableTensor("head.weight", head, 1e-3)]
    inner = SparseDirections(0.5, "large-magnitude", scope="global")
    rule = ExcludedDirections(inner, exclude=[r"^head\."])
    rule.bind(None, 0, "rademacher")
    rule.prepare(tensors, 0)
    assert set(inner.thresholds) == {"body.weight"}
    dense = rule.direction(tensors[1], 0)
    assert isinstance(dense, DenseDirection) and dense.distribution == "rademacher"
    z = rule.direction(tensors[0], 0).sample(body, 3)
    assert int((z != 0).sum()) == 12  # half of the body, by its own magnitudes
    state = rule.state_dict()  # the inner rule's
    assert state["thresholds"] == inner.thresholds and set(state["masks"]) == {"body.weight"}
