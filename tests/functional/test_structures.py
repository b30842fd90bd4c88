"""Structured directions at the functional level: masked, low-rank, block selection."""

from __future__ import annotations

import pytest
import torch

from zolightning.functional.block_schedule import BLOCK_ORDERS, BlockSchedule
from zolightning.functional.block_selection import BlockSelection
from zolightning.functional.low_rank import LowRankDirections
from zolightning.functional.masked import SparseDirections, pack_mask, unpack_mask
from zolightning.functional.structure import PerturbationStructure, TrainableTensor
from zolightning.optim import ZOSGD


def tensors_of(model: torch.nn.Module, eps: float = 1e-3) -> list[TrainableTensor]:
    return [TrainableTensor(n, p, eps) for n, p in model.named_parameters()]


def stack() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 3))


STRUCTURES = {
    "sparse-small": lambda: PerturbationStructure(directions=SparseDirections(0.5, "small-magnitude", refresh_interval=2)),
    "sparse-random-global": lambda: PerturbationStructure(
        directions=SparseDirections(0.5, "random", refresh_interval=3, scope="global", storage="recompute")
    ),
    "sparse-large-global": lambda: PerturbationStructure(directions=SparseDirections(0.7, "large-magnitude", scope="global")),
    "lozo": lambda: PerturbationStructure(directions=LowRankDirections(rank=2, refresh_interval=2, mode="lozo")),
    "subzero": lambda: PerturbationStructure(directions=LowRankDirections(rank=2, refresh_interval=2, mode="subzero")),
    "bcd": lambda: PerturbationStructure(
        BlockSelection([["0.weight", "0.bias"], ["1.weight", "1.bias"], ["2.weight", "2.bias"]], BlockSchedule(3))
    ),
}


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_every_structure_updates_along_the_direction_it_perturbed_including_refresh_steps(name):
    """Record the move actually applied during the first forward, and compare it with the update's move."""
    model = stack()
    structure = STRUCTURES[name]()
    optimizer = ZOSGD(model.named_parameters(), lr=0.05, eps=1e-3)
    x = torch.randn(16, 6)
    for step in range(6):  # refresh intervals 2 and 3: steps 0, 2, 3, 4 are refresh steps
        before = [p.detach().clone() for p in model.parameters()]
        perturbed: list[list[torch.Tensor]] = []

        def loss():
            if not perturbed:
                perturbed.append([p.detach().clone() for p in model.parameters()])
            return model(x).pow(2).mean()

        plan = structure.plan(tensors_of(model), step)
        optimizer.step(loss, seed=1000 + step, plan=plan, restore="snapshot")
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
    structure = STRUCTURES[name]()
    if name == "bcd":
        structure = PerturbationStructure(BlockSelection([["weight"], ["bias"]], BlockSchedule(2)))
    optimizer = ZOSGD(model.named_parameters(), lr=0.02, eps=1e-3)
    initial = float(loss())
    for step in range(800):
        optimizer.step(loss, seed=step, plan=structure.plan(tensors_of(model), step))
    # Magnitude masks are biased by design (coordinates whose |θ| never ranks among the perturbed ones stay put), so
    # they only have to descend; every unbiased structure has to converge.
    biased = isinstance(structure.directions, SparseDirections) and structure.directions.criterion != "random"
    assert float(loss()) < (0.5 if biased else 0.05) * initial, float(loss()) / initial


def test_inactive_tensors_are_bitwise_unchanged_and_get_no_noise(monkeypatch):
    import zolightning.functional.directions as directions

    drawn = []
    original = directions.fill_noise_
    monkeypatch.setattr(directions, "fill_noise_", lambda out, *a, **k: drawn.append(out.numel()) or original(out, *a, **k))
    model = stack()
    structure = STRUCTURES["bcd"]()
    optimizer = ZOSGD(model.named_parameters(), lr=0.05)
    x = torch.randn(4, 6)
    for step in range(3):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        drawn.clear()
        optimizer.step(lambda: model(x).sum(), seed=step, plan=structure.plan(tensors_of(model), step), restore="snapshot")
        active = f"{step}."
        for n, p in model.named_parameters():
            assert torch.equal(p, before[n]) != n.startswith(active), n
        active_numel = sum(p.numel() for n, p in model.named_parameters() if n.startswith(active))
        # Three passes with a snapshot restore: +εz, −2εz, the update. Each draws exactly the active block's size.
        assert sum(drawn) == 3 * active_numel


def test_masked_noise_draws_only_the_perturbed_entries_and_respects_sparsity():
    param = torch.randn(40, 50)
    rule = SparseDirections(0.75, "small-magnitude")
    rule.prepare([TrainableTensor("w", param, 1e-3)], 0)
    direction = rule.direction(TrainableTensor("w", param, 1e-3), 0)
    z = direction.sample(param, 7)
    assert direction.numel_generated(param) == int((z != 0).sum()) == 500
    assert float(param.abs()[z != 0].max()) <= float(param.abs()[z == 0].min())  # the smallest magnitudes


def test_masks_pack_to_bits_and_back():
    mask = torch.rand(7, 13) > 0.3
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (7 * 13 + 7) // 8
    assert torch.equal(unpack_mask(packed, mask.shape), mask)


def test_low_rank_directions_have_the_rank_and_unit_scale():
    param = torch.zeros(64, 48)
    for mode, rank in [("lozo", 2), ("subzero", 4)]:
        rule = LowRankDirections(rank=rank, refresh_interval=10, mode=mode)
        direction = rule.direction(TrainableTensor("w", param, 1e-3), 0)
        zs = torch.stack([direction.sample(param, s) for s in range(200)])
        assert int(torch.linalg.matrix_rank(zs[0])) == rank
        assert float(zs.pow(2).mean()) == pytest.approx(1.0, rel=0.15)
    bias = torch.zeros(5)
    assert LowRankDirections().direction(TrainableTensor("b", bias, 1e-3), 0).numel_generated(bias) == 5


def test_lozo_keeps_v_between_refreshes_and_redraws_it_on_refresh():
    param = torch.zeros(8, 6)
    rule = LowRankDirections(rank=1, refresh_interval=3, mode="lozo")
    tensor = TrainableTensor("w", param, 1e-3)
    v = [rule.direction(tensor, step).factors[0].clone() for step in range(6)]
    assert torch.equal(v[0], v[1]) and torch.equal(v[1], v[2]) and not torch.equal(v[2], v[3])


@pytest.mark.parametrize("order", BLOCK_ORDERS)
def test_every_block_order_is_a_pure_function_of_the_step(order):
    schedule = BlockSchedule(5, order, steps_per_block=2, seed=3, sizes=[1, 2, 3, 4, 5])
    sequence = [schedule.block_at(step) for step in range(60)]
    fresh = BlockSchedule(5, order, steps_per_block=2, seed=3, sizes=[1, 2, 3, 4, 5])
    assert [fresh.block_at(step) for step in range(30, 60)] == sequence[30:]
    assert all(sequence[2 * k] == sequence[2 * k + 1] for k in range(30))
    if order in ("cyclic", "descending", "flip-flop", "random-permutation"):
        assert sorted(sequence[0:10:2]) == [0, 1, 2, 3, 4]  # a sweep visits every block once
    assert set(sequence) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: SparseDirections(1.0), "sparsity"),
        (lambda: SparseDirections(0.5, "median"), "criterion"),
        (lambda: SparseDirections(0.5, refresh_interval=0), "refresh_interval"),
        (lambda: LowRankDirections(rank=0), "rank"),
        (lambda: LowRankDirections(mode="svd"), "mode"),
        (lambda: BlockSchedule(3, "zigzag"), "order"),
        (lambda: BlockSchedule(3, steps_per_block=0), "steps_per_block"),
    ],
)
def test_bad_structure_arguments_are_refused_by_name(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()
