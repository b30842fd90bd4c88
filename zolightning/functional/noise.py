"""Seeded noise streams.

Every tensor's perturbation direction comes from its own ``torch.Generator`` seeded by mixing three integers:
the base seed, the step (or direction) counter, and a key that identifies the tensor. Nothing here touches torch's
global RNG, and skipping one tensor never shifts the noise of another: each tensor's stream depends only on its own
key. That is what makes "regenerate z from the seed" exact for the update, for any structure and any tensor order.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import torch
from torch import Tensor

from zolightning.functional.checks import check_choice
from zolightning.functional.chunk_executor import chunk_executor
from zolightning.functional.counter_noise import counter_noise, fill_counter_noise_  # noqa: F401  (the public name)

Distribution = Literal["gaussian", "rademacher"]
NoiseSource = Literal["counter", "torch"]
"""Where z's numbers come from (``zo.noise``). ``counter``: counter-based Philox noise, element i a pure function of
(seed, i) (:mod:`zolightning.functional.counter_noise`), generated inside the fused in-place moves. ``torch``: a
``torch.Generator`` per chunk of :data:`NOISE_CHUNK` elements, as in zolightning 0.x runs."""

_MASK_64 = (1 << 64) - 1
_MASK_63 = (1 << 63) - 1  # torch.Generator.manual_seed takes values below 2**64; 63 bits keep them positive everywhere


def _splitmix64(value: int) -> int:
    """One round of SplitMix64: a bijective avalanche mix of a 64-bit integer."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK_64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK_64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK_64
    return value ^ (value >> 31)


def mix_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed; order matters and every part changes the result."""
    state = 0x5A4F4C49474854  # "ZOLIGHT"
    for part in parts:
        state = _splitmix64(state ^ (int(part) & _MASK_64))
    return state & _MASK_63


# Attribute names that wrappers put between a model and its parameters: Fabric's module wrapper, torch.compile, FSDP1
# and activation checkpointing. They never name a layer of a model itself.
WRAPPER_ATTRIBUTES = ("_forward_module", "_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module")


def unwrapped_name(name: str) -> str:
    """``name`` without the wrappers' attributes (``_forward_module.0.weight`` → ``0.weight``), so that a parameter
    draws the same noise whether it is named through a wrapper (Fabric's ``setup_module``, ``torch.compile``) or not."""
    parts = name.split(".")
    kept = [part for part in parts if part not in WRAPPER_ATTRIBUTES]
    return name if len(kept) == len(parts) else ".".join(kept)


def stable_key(name: str) -> int:
    """A 63-bit key for a tensor name that is the same in every process and Python version (unlike ``hash``)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK_63


def step_seed(base_seed: int, step: int, stream: int = 0) -> int:
    """The seed of one ZO step.

    Args:
        base_seed: the run's seed (``ZOConfig.seed``).
        step: the optimizer step counter (``trainer.global_step`` in Lightning).
        stream: separates independent directions drawn at the same step: the direction index for q-direction
            estimates, the rank in query-parallel data parallelism. 0 by default.
    """
    return mix_seed(base_seed, step, stream)


def tensor_seed(seed: int, key: int) -> int:
    """The seed of one tensor's noise at one step: ``seed`` from :func:`step_seed`, ``key`` from :func:`stable_key`."""
    return mix_seed(seed, key)


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A fresh generator on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


# Noise is defined in chunks of this many elements, each from its own stream, so that chunks can be drawn in parallel.
NOISE_CHUNK = 1 << 20

def fill_noise_(
    out: Tensor, seed: int, distribution: Distribution = "gaussian", noise: NoiseSource = "torch"
) -> Tensor:
    """Fill ``out`` in place with i.i.d. noise from the stream ``seed``.

    ``gaussian``: N(0, 1). ``rademacher``: ±1 with equal probability (same variance, cheaper to draw).

    ``noise="counter"``: element i (in ``out``'s row-major order) is element i of
    ``counter_noise(seed, 0, 0, out.numel(), distribution)``, computed in float32 and cast to ``out``'s dtype; no
    thread count, chunking or device changes a value. The rest of this docstring is about ``noise="torch"``:

    A tensor of up to :data:`NOISE_CHUNK` elements is one stream. A larger one is split, in memory order, into chunks of
    that size, chunk k drawn from the stream ``mix_seed(seed, k)``; on the CPU the chunks are drawn on the executor of
    the enclosing :func:`chunks_drawn_on` block (the engine's noise workers), and the values do not depend on it.
    """
    check_distribution(distribution)
    check_noise_source(noise)
    if noise == "counter":
        return fill_counter_noise_(out, seed, 0, distribution=distribution)
    flat = out.view(-1) if out.is_contiguous() else None
    if flat is None or flat.numel() <= NOISE_CHUNK:
        return _fill(out, seed, distribution)
    chunks = [(flat[start : start + NOISE_CHUNK], mix_seed(seed, index)) for index, start in
              enumerate(range(0, flat.numel(), NOISE_CHUNK))]
    executor = chunk_executor() if out.device.type == "cpu" else None
    if executor is None:
        for chunk, chunk_seed in chunks:
            _fill(chunk, chunk_seed, distribution)
    else:
        for future in [executor.submit(_fill, chunk, chunk_seed, distribution) for chunk, chunk_seed in chunks]:
            future.result()
    return out


def _fill(out: Tensor, seed: int, distribution: Distribution) -> Tensor:
    generator = make_generator(seed, out.device)
    if distribution == "gaussian":
        return out.normal_(generator=generator)
    return out.random_(0, 2, generator=generator).mul_(2).sub_(1)


def sample_noise(
    shape: torch.Size | tuple[int, ...],
    seed: int,
    *,
    device: torch.device | str = "cpu",
    distribution: Distribution = "gaussian",
    noise: NoiseSource = "torch",
) -> Tensor:
    """A new fp32 tensor of ``shape`` filled by :func:`fill_noise_` (``noise``: its source).

    Noise is always drawn in fp32 so that the same seed gives the same direction whatever the parameters' dtype.
    """
    return fill_noise_(torch.empty(shape, device=device, dtype=torch.float32), seed, distribution, noise)


def check_distribution(distribution: str, argument: str = "distribution") -> None:
    """Raise a ``ValueError`` naming ``argument`` unless ``distribution`` is supported."""
    check_choice(distribution, Distribution, argument)


def check_noise_source(noise: str, argument: str = "noise") -> None:
    """Raise a ``ValueError`` naming ``argument`` unless ``noise`` is ``counter`` or ``torch``."""
    check_choice(noise, NoiseSource, argument)
