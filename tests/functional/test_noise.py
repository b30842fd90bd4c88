import pytest
import torch

from zolightning.functional.noise import fill_noise_, mix_seed, sample_noise, stable_key, step_seed, tensor_seed


def test_same_seed_gives_same_noise_and_other_seeds_differ():
    a = sample_noise((1000,), 123)
    assert torch.equal(a, sample_noise((1000,), 123))
    assert not torch.equal(a, sample_noise((1000,), 124))


def test_noise_never_touches_the_global_rng():
    torch.manual_seed(7)
    expected = torch.rand(5)
    torch.manual_seed(7)
    sample_noise((10_000,), 99)
    fill_noise_(torch.empty(100), 5, "rademacher")
    assert torch.equal(torch.rand(5), expected)


def test_gaussian_moments_and_rademacher_values():
    z = sample_noise((200_000,), 3)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.var()) - 1.0) < 0.02
    r = sample_noise((10_000,), 3, distribution="rademacher")
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(r.mean())) < 0.05


def test_seed_mixing_depends_on_every_part_and_on_order():
    base = step_seed(0, 10)
    assert step_seed(0, 10) == base
    assert len({base, step_seed(1, 10), step_seed(0, 11), step_seed(0, 10, stream=1)}) == 4
    assert mix_seed(1, 2) != mix_seed(2, 1)
    assert 0 <= tensor_seed(base, stable_key("layer.weight")) < 2**63


def test_stable_key_is_a_pure_function_of_the_name():
    assert stable_key("encoder.layer.0.weight") == stable_key("encoder.layer.0.weight")
    assert stable_key("a") != stable_key("b")
    # A fixed value: keys must not change between processes or releases, or checkpoints would resume on new noise.
    assert stable_key("weight") == 351331618456171078
    assert step_seed(0, 0) == 2163812397452063710


def test_unknown_distribution_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="gaussian"):
        fill_noise_(torch.empty(3), 0, "uniform")  # type: ignore[arg-type]


def test_a_wrappers_attribute_does_not_change_a_parameters_noise_key():
    from zolightning.functional.noise import unwrapped_name
    from zolightning.structures.base import tensor_key

    assert unwrapped_name("_forward_module.0.weight") == "0.weight"  # Fabric's setup_module
    assert unwrapped_name("_orig_mod.encoder._fsdp_wrapped_module.layer.bias") == "encoder.layer.bias"
    assert unwrapped_name("module.0.weight") == "module.0.weight"  # a layer may be called `module`: kept
    assert tensor_key("_forward_module._orig_mod.net.0.weight") == tensor_key("net.0.weight")
    assert tensor_key("net.0.weight") != tensor_key("net.0.bias")
