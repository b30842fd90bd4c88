"""The in-place moves of a plan: with counter noise every move of a dense tensor is one fused pass whose z is exactly
the direction the update regenerates; with torch noise, a drawn z added to θ (the moves of earlier runs)."""

from __future__ import annotations

import pytest
import torch

from zolightning.functional.counter_noise import counter_noise
from zolightning.functional.directions import DenseDirection
from zolightning.functional.masked import MaskedDirection
from zolightning.functional.noise import fill_noise_, stable_key, tensor_seed
from zolightning.functional.perturbation import ActiveTensor, move_

SEED = 12345


def entry_of(param: torch.Tensor, noise: str = "counter", direction=None) -> ActiveTensor:
    return ActiveTensor("layer.weight", param, stable_key("layer.weight"), direction or DenseDirection(), 1e-3,
                        noise=noise)


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_the_engine_direction_is_the_public_counter_noise_of_the_tensor_seed(distribution):
    param = torch.zeros(37, 29)
    entry = entry_of(param, direction=DenseDirection(distribution))
    whole = counter_noise(tensor_seed(SEED, entry.key), 0, 0, param.numel(), distribution)
    assert torch.equal(entry.direction_at(SEED), whole.view(param.shape))


def test_a_fused_move_adds_exactly_the_regenerated_z():
    """θ + c·z with c rounded to float32 and two float32 roundings (no fused multiply-add): the update and the undo
    regenerate this very z."""
    torch.manual_seed(0)
    param = torch.randn(3, 1000)
    before = param.clone()
    entry = entry_of(param)
    assert entry.fused
    coefficient = 3.7e-3
    entry.add_along_(SEED, coefficient)
    z = entry.direction_at(SEED)
    expected = before + z * torch.tensor(coefficient, dtype=torch.float32)
    assert torch.equal(param, expected)


def test_a_fused_move_of_bf16_weights_rounds_once_to_nearest():
    torch.manual_seed(0)
    param = torch.randn(4, 300).to(torch.bfloat16)
    before = param.clone()
    entry = entry_of(param)
    entry.add_along_(SEED, 0.05)
    z = entry.direction_at(SEED)
    expected = (before.float() + z * torch.tensor(0.05, dtype=torch.float32)).to(torch.bfloat16)
    assert torch.equal(param, expected)


def test_a_fused_move_ignores_a_given_z_and_an_unfused_one_uses_it():
    param = torch.zeros(10)
    wrong = torch.ones(10)
    entry_of(param).add_along_(SEED, 1.0, wrong)
    assert not torch.equal(param, wrong)  # regenerated in the pass, as every other move of the tensor
    other = torch.zeros(10)
    entry_of(other, noise="torch").add_along_(SEED, 1.0, wrong)
    assert torch.equal(other, wrong)


def test_a_move_and_its_undo_bring_theta_back_within_two_ulp():
    torch.manual_seed(1)
    param = torch.randn(64, 64)
    before = param.clone()
    plan = [entry_of(param)]
    move_(plan, SEED, [1e-3])
    move_(plan, SEED, [-2e-3])
    move_(plan, SEED, [1e-3])
    ulp = torch.finfo(torch.float32).eps * before.abs().clamp_min(1e-3)
    assert ((param - before).abs() <= 2 * ulp).all()


def test_torch_noise_keeps_the_draws_of_earlier_runs():
    param = torch.zeros(8, 8)
    entry = entry_of(param, noise="torch")
    assert not entry.fused
    expected = fill_noise_(torch.empty(8, 8), tensor_seed(SEED, entry.key))
    assert torch.equal(entry.direction_at(SEED), expected)
    move_([entry], SEED, [0.5])
    assert torch.equal(param, expected * 0.5)


def test_a_masked_direction_takes_the_first_values_of_the_counter_stream():
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[::3, 1::2] = True
    entry = entry_of(torch.zeros(10, 10), direction=MaskedDirection(mask))
    z = entry.direction_at(SEED)
    values = counter_noise(tensor_seed(SEED, entry.key), 0, 0, int(mask.sum()))
    assert torch.equal(z[mask], values) and not z[~mask].any()
