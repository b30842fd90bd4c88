import pytest
import torch

from zolightning.functional.rounding import round_stochastic_


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_rounding_is_unbiased_and_lands_on_a_neighbour(dtype):
    low = torch.tensor(1.0, dtype=dtype)
    high = torch.nextafter(low, torch.tensor(2.0, dtype=dtype))
    exact = 1.0 + 0.3 * (float(high) - 1.0)  # 30% of the way to the upper neighbour: nearest rounding gives 1.0
    value = torch.full((200_000,), exact)
    target = torch.empty_like(value, dtype=dtype)
    round_stochastic_(target, value, seed=3)
    assert set(torch.unique(target).tolist()) == {float(low), float(high)}
    spacing = float(high) - 1.0
    assert float(target.float().mean()) == pytest.approx(exact, abs=0.01 * spacing)
    assert float(value.to(dtype).float().mean()) == 1.0  # nearest rounding loses the 30% entirely


def test_representable_values_are_written_unchanged_and_the_seed_fixes_the_draw():
    value = torch.tensor([0.5, -2.0, 1.0 + 3e-3, -1.0 - 3e-3])
    first = round_stochastic_(torch.empty(4, dtype=torch.bfloat16), value, seed=9)
    again = round_stochastic_(torch.empty(4, dtype=torch.bfloat16), value, seed=9)
    assert torch.equal(first, again)
    assert first[:2].tolist() == [0.5, -2.0]
