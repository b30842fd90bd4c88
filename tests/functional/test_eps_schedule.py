import pytest

from zolightning.functional.eps_schedule import EPS_SCHEDULES, eps_factor


@pytest.mark.parametrize("schedule", EPS_SCHEDULES)
def test_each_schedule_starts_at_one_ends_at_the_final_ratio_and_never_rises(schedule):
    final = 1.0 if schedule == "constant" else 0.05
    factors = [eps_factor(schedule, step, 100, 0.05) for step in range(0, 121)]
    assert factors[0] == 1.0
    assert factors[100] == pytest.approx(final) and factors[120] == pytest.approx(final)
    assert all(later <= earlier + 1e-12 for earlier, later in zip(factors, factors[1:]))


def test_midpoints_match_their_formulas():
    assert eps_factor("linear", 50, 100, 0.1) == pytest.approx(0.55)
    assert eps_factor("cosine", 50, 100, 0.1) == pytest.approx(0.55)
    assert eps_factor("geometric", 50, 100, 0.01) == pytest.approx(0.1)


def test_unknown_schedules_and_bad_ratios_are_refused_by_name():
    with pytest.raises(ValueError, match="`eps_schedule`"):
        eps_factor("step", 1, 10, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`eps_final_ratio`"):
        eps_factor("linear", 1, 10, 0.0)
