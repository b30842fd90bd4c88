"""``LowRankDirections`` (LOZO, SubZero): low-rank z on matrices from factors kept between refreshes."""

import pytest
import torch

from zolightning.functional.directions import DenseDirection
from zolightning.structures import LowRankDirections, TrainableTensor


def test_low_rank_directions_have_the_rank_and_unit_scale():
    param = torch.zeros(64, 48)
    for mode, rank in [("lozo", 2), ("subzero", 4)]:
        rule = LowRankDirections(rank=rank, refresh_interval=10, mode=mode)
        direction = rule.direction(TrainableTensor("w", param, 1e-3), 0)
        zs = torch.stack([direction.sample(param, s) for s in range(200)])
        assert int(torch.linalg.matrix_rank(zs[0])) == rank
        assert float(zs.pow(2).mean()) == pytest.approx(1.0, rel=0.15)
    bias = torch.zeros(5)
    assert isinstance(LowRankDirections().direction(TrainableTensor("b", bias, 1e-3), 0), DenseDirection)


def test_lozo_keeps_v_between_refreshes_and_redraws_it_on_refresh():
    param = torch.zeros(8, 6)
    rule = LowRankDirections(rank=1, refresh_interval=3, mode="lozo")
    tensor = TrainableTensor("w", param, 1e-3)
    v = [rule.direction(tensor, step).factors[0].clone() for step in range(6)]
    assert torch.equal(v[0], v[1]) and torch.equal(v[1], v[2]) and not torch.equal(v[2], v[3])


@pytest.mark.parametrize(
    ("factory", "match"),
    [(lambda: LowRankDirections(rank=0), "rank"), (lambda: LowRankDirections(mode="svd"), "mode")],
)
def test_bad_low_rank_arguments_are_refused_by_name(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()
