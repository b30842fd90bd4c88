"""Block orders of MeZO-BCD: pure functions of (seed, step)."""

import pytest

from zolightning.structures.block_schedule import BLOCK_ORDERS, BlockSchedule


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
        (lambda: BlockSchedule(3, "zigzag"), "order"),
        (lambda: BlockSchedule(3, steps_per_block=0), "steps_per_block"),
    ],
)
def test_bad_schedule_arguments_are_refused_by_name(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()
