"""Choosing which parameters a task trains (``requires_grad=True``, i.e. what ZO perturbs and updates).

A choice is a ``+``-joined list of parts:

* ``head``: the task's own new layers (the classifier); tasks without a head have none.
* ``norms``: every normalisation layer's parameters (``LayerNorm``, ``RMSNorm``, ...) and every bias in the model,
  BitFit-style (Ben Zaken et al. 2022).
* ``last_layer``: every parameter of the highest-numbered transformer block (``...layer.5.``, ``...layers.29.``).
* ``all``: every parameter.

So ``"head"`` is a linear probe, ``"head+norms"`` a BitFit-like fine-tune, ``"head+last_layer"`` tunes the top block
too, ``"all"`` is MeZO's full fine-tuning.
"""

from __future__ import annotations

import re

from torch import nn

__all__ = ["TRAINABLE_PARTS", "apply_trainable", "parse_trainable", "select_trainable"]

TRAINABLE_PARTS = ("head", "norms", "last_layer", "all")
"""The parts a trainable choice may join with ``+``."""

_BLOCK_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def parse_trainable(choice: str) -> tuple[str, ...]:
    """The parts of ``choice`` (e.g. ``"head+norms"`` → ``("head", "norms")``).

    Raises:
        ValueError: an empty choice or an unknown part, listing the known ones.
    """
    if not isinstance(choice, str) or not choice.strip():
        raise ValueError(f"`trainable` must be a non-empty string such as 'head' or 'head+norms', got {choice!r}.")
    parts = tuple(part.strip() for part in choice.split("+"))
    unknown = [part for part in parts if part not in TRAINABLE_PARTS]
    if unknown:
        raise ValueError(
            f"Unknown trainable part(s) {unknown} in {choice!r}; join any of {list(TRAINABLE_PARTS)} with '+', "
            "e.g. 'head', 'head+norms' (BitFit-like), 'head+last_layer', 'all'."
        )
    return parts


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) or type(module).__name__.endswith(
        ("LayerNorm", "RMSNorm")
    )


def select_trainable(model: nn.Module, choice: str, head_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the parameters that ``choice`` trains, in model order.

    Args:
        model: the whole task module.
        choice: see the module docstring.
        head_prefixes: name prefixes of the task's head (e.g. ``("head.",)``); ``head`` selects these.

    Raises:
        ValueError: a bad choice, ``head`` asked of a model without one, ``last_layer`` asked of a model without
            numbered blocks, or a choice that selects nothing.
    """
    parts = parse_trainable(choice)
    names = [name for name, _ in model.named_parameters()]
    chosen: set[str] = set()
    if "all" in parts:
        chosen.update(names)
    if "head" in parts:
        if not head_prefixes:
            others = [part for part in TRAINABLE_PARTS if part != "head"]
            raise ValueError(f"{type(model).__name__} has no head; choose from {others}.")
        chosen.update(name for name in names if name.startswith(head_prefixes))
    if "norms" in parts:
        for module_name, module in model.named_modules():
            if _is_norm(module):
                prefix = f"{module_name}." if module_name else ""
                chosen.update(f"{prefix}{name}" for name, _ in module.named_parameters(recurse=False))
        chosen.update(name for name in names if name == "bias" or name.endswith(".bias"))
    if "last_layer" in parts:
        indexed = [(int(match.group(1)), name) for name in names if (match := _BLOCK_INDEX.search(name))]
        if not indexed:
            raise ValueError(f"{type(model).__name__} has no numbered transformer blocks for 'last_layer'.")
        top = max(index for index, _ in indexed)
        chosen.update(name for index, name in indexed if index == top)
    selected = [name for name in names if name in chosen]
    if not selected:
        raise ValueError(f"The trainable choice {choice!r} selects no parameter of {type(model).__name__}.")
    return selected


def apply_trainable(model: nn.Module, choice: str, head_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Set ``requires_grad`` on every parameter of ``model``: ``True`` exactly for :func:`select_trainable`'s
    names, which are returned."""
    selected = select_trainable(model, choice, head_prefixes)
    keep = set(selected)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in keep)
    return selected
