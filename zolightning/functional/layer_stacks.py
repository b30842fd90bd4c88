"""Repeated layer stacks of any ``nn.Module``: the containers whose children run one after another.

A stack is an ``nn.ModuleList`` or ``nn.Sequential`` of at least two children of one class (a transformer's
``layers`` / ``h`` / ``layer``, an encoder's and a decoder's in an encoder-decoder model, a custom ``nn.Sequential``
of blocks). Only outermost stacks count: a stack inside a layer of another stack (experts in an MoE layer, say) is not
one. Pure: it reads the module tree, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["LayerStack", "find_layer_stacks"]


@dataclass(frozen=True)
class LayerStack:
    """A repeated layer stack.

    Attributes:
        path: the container's qualified name (``""`` for the root).
        layers: its children, in order.
    """

    path: str
    layers: tuple[nn.Module, ...]


def find_layer_stacks(module: nn.Module) -> list[LayerStack]:
    """Every outermost repeated layer stack of ``module``, in ``named_modules()`` order."""
    stacks: list[LayerStack] = []
    inside: set[int] = set()  # ids of modules under an already found stack's layers
    for path, candidate in module.named_modules():
        if id(candidate) in inside or not isinstance(candidate, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(candidate.children())
        if len(children) < 2 or len({type(child) for child in children}) != 1:
            continue
        stacks.append(LayerStack(path, tuple(children)))
        inside.update(id(sub) for child in children for sub in child.modules())
    return stacks
