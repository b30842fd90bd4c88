"""How a user's ``training_step`` becomes the objective of a ZO step: the wrapper, the loss it returns, and the eval
mode its forwards run in."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor


def extract_loss(output: Any) -> Tensor:
    """The loss from a ``training_step`` output: a scalar tensor, a number, or a mapping with ``"loss"``."""
    if isinstance(output, Mapping):
        if "loss" not in output:
            raise ValueError(f"`training_step` returned a dict without 'loss' (keys: {sorted(output)}).")
        output = output["loss"]
    if isinstance(output, (int, float)):
        return torch.tensor(float(output))
    if not isinstance(output, Tensor):
        raise TypeError(
            "For ZO training, `training_step` must return the loss: a scalar tensor or a dict with 'loss'; "
            f"got {type(output).__name__}."
        )
    return output


def zo_training_step(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a user's ``training_step`` so that a call from Lightning runs a whole ZO step around it."""

    @functools.wraps(original)
    def training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Inside the step's own evaluations, or called by hand outside a fit loop, it is the plain objective.
        if self._zo_evaluating or self._trainer is None or not self._trainer.training:
            return original(self, *args, **kwargs)
        batch = args[0] if args else kwargs.get("batch")
        return self.zo_step(functools.partial(original, self, *args, **kwargs), batch)

    training_step._zo_wrapped = True  # type: ignore[attr-defined]
    return training_step


@contextmanager
def evaluation_mode(module: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Eval mode for the step's forwards when ``enabled`` (``zo.eval_mode``: dropout off, BatchNorm statistics
    untouched, as in MeZO); every submodule's own train/eval flag is restored afterwards."""
    if not enabled:
        yield
        return
    flags = [(child, child.training) for child in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for child, training in flags:
            child.training = training
