"""Parameter blocks for block coordinate descent (MeZO-BCD, arXiv 2501.19099).

MeZO-BCD perturbs and updates one block of parameters per step, so random generation and in-place work shrink from
d to about d/#blocks while the two forwards stay. This module only answers "which parameters form which block": a
pure function of a module's parameter names and ``requires_grad`` flags (no Lightning, no state, no tensors touched).

Granularities (coarse to fine):

* ``"layer"``: one block per child of the model's repeated layer stack (found automatically, for any ``nn.Module``),
  plus one block per remaining component (embeddings, final norm, head, ...).
* ``"sublayer"``: like ``"layer"``, but each layer is split into an ``attention`` and an ``mlp`` block.
* ``"linear"``: one block per module that directly owns parameters (a Linear, a LayerNorm, an Embedding, ...).
* ``"parameter"``: one block per parameter tensor.

User regexes (``patterns``) override the granularity. Every included parameter lies in exactly one block, blocks are
never empty, block names are unique, and blocks are ordered by the position of their first parameter in
``module.named_parameters()``, so a partition is deterministic for a given architecture and set of trainable flags.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from zolightning.functional.checks import check_choice, choices_of, compile_pattern

__all__ = ["GRANULARITIES", "Block", "Granularity", "block_of", "check_granularity", "partition_blocks"]

Granularity = Literal["layer", "sublayer", "linear", "parameter"]
GRANULARITIES = choices_of(Granularity)

ROOT_BLOCK_NAME = "<root>"  # the `linear` block of parameters owned directly by the root module (whose path is "")
REST_BLOCK_NAME = "rest"  # the `patterns` block of parameters that no pattern matched

# Immediate children of a layer whose name contains one of these (case-insensitive) form its "attention" part.
_ATTENTION_MARKERS: tuple[str, ...] = ("attn", "attention")


@dataclass(frozen=True)
class Block:
    """One block of parameters, perturbed and updated together.

    Attributes:
        name: A human-readable, unique (within a partition) name, e.g. ``"model.decoder.layers.3"`` or
            ``"model.decoder.layers.3.attention"``.
        param_names: Qualified names as in ``module.named_parameters()``, in ``named_parameters()`` order; never empty.
        numel: Total number of elements of those parameters.
    """

    name: str
    param_names: tuple[str, ...]
    numel: int

    def __post_init__(self) -> None:
        # A list would make the frozen dataclass unhashable and mutable through the back door: store a tuple.
        if not isinstance(self.param_names, tuple):
            object.__setattr__(self, "param_names", tuple(self.param_names))
        if not self.param_names:
            raise ValueError(f"block {self.name!r} has no parameters; blocks are never empty")
        if self.numel < 0:
            raise ValueError(f"block {self.name!r} has a negative numel ({self.numel})")

    def __len__(self) -> int:
        """The number of parameter tensors in the block."""
        return len(self.param_names)


def partition_blocks(
    module: nn.Module,
    granularity: str = "layer",
    patterns: Sequence[str] | None = None,
    trainable_only: bool = True,
) -> list[Block]:
    """Split a module's parameters into disjoint, non-empty blocks.

    Args:
        module: Any ``nn.Module`` (a Hugging Face model, a LoRA-wrapped model, a custom network).
        granularity: One of :data:`GRANULARITIES`; default ``"layer"``. Ignored (but still validated) when
            ``patterns`` is given.
        patterns: Regexes that override ``granularity``: each parameter goes to the first pattern that
            ``re.search``-es its name and the block is named by the matched text (``match.group(0)``), so
            ``[r"layers\\.\\d+"]`` yields one block per layer; parameters no pattern matches form one block named
            ``"rest"`` (only if there are any). Matches with the same text share a block. A single string is taken as
            one pattern; ``None`` or an empty sequence means "use ``granularity``".
        trainable_only: Include only parameters with ``requires_grad=True`` (default). Frozen parameters (e.g. LoRA
            base weights) then appear in no block.

    Returns:
        The blocks, ordered by the position of their first parameter in ``module.named_parameters()``. Tied
        parameters appear once, under the first name ``named_parameters()`` gives them.

    Raises:
        ValueError: For an unknown granularity, an invalid or empty-matching pattern, or a module without
            (trainable) parameters.
    """
    check_granularity(granularity)
    compiled = _compile_patterns(patterns)

    # named_parameters() de-duplicates shared tensors (a tied lm_head/embedding appears once) and fixes the order.
    numels: dict[str, int] = {
        name: param.numel() for name, param in module.named_parameters() if param.requires_grad or not trainable_only
    }
    if not numels:
        what = "trainable parameters (requires_grad=True)" if trainable_only else "parameters"
        raise ValueError(f"{type(module).__name__} has no {what} to partition into blocks")

    if compiled:
        assignment = _assign_by_patterns(numels, compiled)
    elif granularity == "parameter":
        assignment = {name: name for name in numels}
    elif granularity == "linear":
        assignment = {name: _module_path(name) or ROOT_BLOCK_NAME for name in numels}
    else:
        assignment = _assign_by_layers(module, numels, split_sublayers=granularity == "sublayer")
    return _group(numels, assignment)


def check_granularity(granularity: str) -> None:
    """Raise a ``ValueError`` naming ``granularity`` unless it is one of :data:`GRANULARITIES`."""
    check_choice(granularity, Granularity, "granularity")


def block_of(blocks: Sequence[Block]) -> dict[str, int]:
    """Map each parameter name to the index of its block in ``blocks``.

    Raises:
        ValueError: If a parameter appears in more than one block (the blocks would not be a partition).
    """
    index: dict[str, int] = {}
    for position, block in enumerate(blocks):
        for name in block.param_names:
            if name in index:
                raise ValueError(
                    f"parameter {name!r} is in block {blocks[index[name]].name!r} and in block {block.name!r}; "
                    "blocks must be disjoint"
                )
            index[name] = position
    return index


# --------------------------------------------------------------------------------------------------------------------
# Helpers


def _compile_patterns(patterns: Sequence[str] | str | None) -> list[re.Pattern[str]]:
    """Compile user regexes, naming the offending one when it is invalid."""
    if patterns is None:
        return []
    if isinstance(patterns, str):  # a bare string is a Sequence[str] of characters: almost surely meant as one regex
        patterns = [patterns]
    return [compile_pattern(pattern, "patterns") for pattern in patterns]


def _module_path(param_name: str) -> str:
    """The path of the module that owns a parameter directly ("" for the root)."""
    return param_name.rpartition(".")[0]


def _join(prefix: str, component: str) -> str:
    return f"{prefix}.{component}" if prefix else component


def _next_component(name: str, prefix: str) -> str:
    """The first path component of ``name`` below ``prefix`` (``name`` must lie strictly below it)."""
    rest = name[len(prefix) + 1 :] if prefix else name
    return rest.split(".", 1)[0]


def _assign_by_patterns(numels: dict[str, int], compiled: Sequence[re.Pattern[str]]) -> dict[str, str]:
    assignment: dict[str, str] = {}
    for name in numels:
        for regex in compiled:
            match = regex.search(name)
            if match is None:
                continue
            if not match.group(0):
                # e.g. r"(layers\.\d+)?" matches the empty string at position 0 of every name: a silent catch-all
                # with a nameless block is never what the user meant.
                raise ValueError(
                    f'block pattern "{regex.pattern}" matched parameter {name!r} with an empty string; '
                    "block names must be non-empty"
                )
            assignment[name] = match.group(0)
            break
        else:
            assignment[name] = REST_BLOCK_NAME
    return assignment


def _find_layer_container(module: nn.Module, numels: dict[str, int]) -> tuple[str, list[str]] | None:
    """The repeated layer stack: the ModuleList/Sequential of >= 2 same-typed children with the most included elements.

    Returns its path and its children's names, or ``None`` if no such container holds any included parameter.
    """
    # Included elements below every module path, in one pass over the parameters (not one pass per candidate).
    held: dict[str, int] = {}
    for name, count in numels.items():
        parts = name.split(".")[:-1]
        held[""] = held.get("", 0) + count
        for depth in range(1, len(parts) + 1):
            path = ".".join(parts[:depth])
            held[path] = held.get(path, 0) + count

    best: tuple[str, list[str]] | None = None
    best_held = 0
    # named_modules() de-duplicates shared modules the same way named_parameters() does, so paths agree with names.
    for path, candidate in module.named_modules():
        if not isinstance(candidate, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(candidate.named_children())
        if len(children) < 2 or len({type(child) for _, child in children}) != 1:
            continue
        # Strictly greater: on a tie the outermost (first visited) container wins.
        if held.get(path, 0) > best_held:
            best, best_held = (path, [child_name for child_name, _ in children]), held[path]
    return best


def _assign_by_layers(module: nn.Module, numels: dict[str, int], split_sublayers: bool) -> dict[str, str]:
    container = _find_layer_container(module, numels)
    layer_paths: set[str] = set()
    prefixes = [""]  # without a repeated stack: one block per top-level child (and per root parameter)
    if container is not None:
        container_path, child_names = container
        layer_paths = {_join(container_path, child) for child in child_names}
        parts = container_path.split(".") if container_path else []
        # The container itself, then its ancestors deepest first, root "" last. The container comes first so that a
        # parameter registered directly on it (never seen in practice) gets a block of its own, not the whole stack.
        prefixes = [".".join(parts[:depth]) for depth in range(len(parts), -1, -1)]

    assignment: dict[str, str] = {}
    for name in numels:
        # The deepest prefix that contains the parameter; the block is that prefix plus the next component of the
        # parameter's name. Below the container that is the layer; elsewhere it makes the embeddings, final norm and
        # head blocks of their own; a parameter directly on a prefix (or on the root) is a block by itself, since its
        # "next component" is its own name.
        prefix = next(p for p in prefixes if p == "" or name.startswith(p + "."))
        block = _join(prefix, _next_component(name, prefix))
        assignment[name] = _sublayer(name, block) if split_sublayers and block in layer_paths else block
    return assignment


def _sublayer(name: str, layer: str) -> str:
    """``<layer>.attention`` for parameters under an immediate child whose name mentions attention, else ``.mlp``."""
    rest = name[len(layer) + 1 :]
    child, dot, _ = rest.partition(".")
    # A parameter directly on the layer (no dot left) belongs to the mlp part, as do all non-attention children.
    if dot and any(marker in child.lower() for marker in _ATTENTION_MARKERS):
        return f"{layer}.attention"
    return f"{layer}.mlp"


def _group(numels: dict[str, int], assignment: dict[str, str]) -> list[Block]:
    """Blocks from a name -> block-name assignment; dict insertion order puts each block at its first parameter."""
    members: dict[str, list[str]] = {}
    for name in numels:  # iterate numels, not assignment, so named_parameters() order is kept inside each block
        members.setdefault(assignment[name], []).append(name)
    return [Block(block_name, tuple(names), sum(numels[n] for n in names)) for block_name, names in members.items()]
