"""Updates below the resolution of bf16 weights: kept by stochastic rounding (the default) or a master, rounded away
with ``low_precision='nearest'``."""

import pytest
import torch

from tests.structures.test_base import structured
from zolightning.optim import ZOSGD, ZOAdam
from zolightning.structures import BlockSelection


def run(mode: str | None, steps: int = 1000) -> tuple[torch.Tensor, ZOSGD]:
    weight = torch.nn.Parameter(torch.ones(8, dtype=torch.bfloat16))
    # A linear loss: E[g·z] = ∇L = 1, so ZO-SGD drifts every entry down by lr a step, while each single update,
    # lr·|g·z| < 2e-5·100, stays far below half an ulp of bf16 just under 1 (2⁻⁹ ≈ 0.002).
    options = {} if mode is None else {"low_precision": mode}  # None: the default
    optimizer = ZOSGD([weight], lr=2e-5, eps=0.1, **options)
    for _ in range(steps):
        optimizer.step(lambda: weight.float().sum())
    return weight, optimizer


def test_nearest_rounding_loses_every_tiny_update():
    weight, _ = run("nearest")
    assert torch.equal(weight, torch.ones_like(weight))


@pytest.mark.parametrize("mode", [None, "stochastic", "master"])
def test_stochastic_rounding_and_an_fp32_master_keep_tiny_updates(mode):
    weight, optimizer = run(mode)
    # 1000 steps of expected drift 2e-5: the mean falls by about 0.02 (five ulps). Stochastic rounding is unbiased
    # but adds noise of about one ulp per entry over the run; the master copy only ZO's own noise.
    tolerance = 0.004 if mode == "master" else 0.015
    assert float(weight.detach().float().mean()) == pytest.approx(1.0 - 0.02, abs=tolerance)
    if mode == "master":
        master = optimizer.state[weight]["master"]
        assert master.dtype == torch.float32
        torch.testing.assert_close(weight, master.to(torch.bfloat16))
    else:
        assert "master" not in optimizer.state.get(weight, {})


def test_masters_live_for_the_active_tensors_alone():
    first = torch.nn.Parameter(torch.ones(8, dtype=torch.bfloat16))
    second = torch.nn.Parameter(torch.ones(8, dtype=torch.bfloat16))
    optimizer = ZOAdam([("a", first), ("b", second)], lr=1e-3, eps=1e-2, low_precision="master")
    engine = structured(optimizer, BlockSelection(blocks=[["a"], ["b"]]))  # a at step 0, b at step 1
    loss = lambda: first.float().sum() + second.float().sum()  # noqa: E731
    for step, active in enumerate([first, second]):
        assert [id(entry.param) for entry in engine.plan(step)] == [id(active)]
        optimizer.step(loss, step=step)
        masters = {id(p) for p, state in optimizer.state.items() if "master" in state}
        assert masters == {id(active)}


def test_an_unknown_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="`low_precision`"):
        ZOSGD([torch.nn.Parameter(torch.ones(2))], low_precision="fp8")
