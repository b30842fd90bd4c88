"""Parameter-efficient fine-tuning through the ``peft`` library: LoRA and prefix tuning on a causal LM.

With an adapter, ZO (or backprop) trains only the adapter's parameters: every base weight is frozen, so it is never
perturbed and never updated (bit for bit). An adapter is described by plain data, as YAML gives it::

    peft: {method: lora, r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]}      # MeZO's LoRA (r 8, α 16)
    peft: {method: prefix, num_virtual_tokens: 5}                                      # MeZO's prefix (5 tokens)

Any other key is passed to peft's ``LoraConfig`` / ``PrefixTuningConfig``. LoRA adapters are injected into the
model's own modules (names such as ``...layers.3.self_attn.q_proj.lora_A.default.weight``), so block structures see
one block of adapters per layer. Prefix tuning wraps the model in peft's ``PeftModelForCausalLM``, whose forward
prepends the learned keys and values.

Prefix initialisation: peft starts a prefix at random, which changes the pretrained model's predictions before any
training. By default (``init: real_activations``, as MeZO does) the prefix starts as the keys and values the model
itself computes for the first ``num_virtual_tokens`` tokens of a fixed text, so the initial model attends to a
plausible context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["PEFT_METHODS", "apply_peft", "is_prefix_model", "prefix_length"]

PEFT_METHODS = ("lora", "prefix")
"""The adapter kinds ``peft: {method: ...}`` accepts."""

_PREFIX_INIT_TEXT = "The following sentence is a short message written by a person about their day and what they think"


def _import_peft() -> Any:
    try:
        import peft
    except ModuleNotFoundError as error:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "LoRA and prefix tuning need the `peft` package: `pip install peft` (or `pip install zolightning[peft]`).",
            name="peft",
        ) from error
    return peft


def check_peft_spec(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``spec`` as a plain dict, checked: a mapping with ``method`` in :data:`PEFT_METHODS`.

    Raises:
        ValueError: not a mapping, or no or an unknown ``method``.
    """
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ValueError(f"`peft` must be a mapping such as {{method: lora, r: 8}}, got {spec!r}.")
    options = dict(spec)
    method = options.get("method")
    if method not in PEFT_METHODS:
        raise ValueError(f"`peft.method` must be one of {list(PEFT_METHODS)}, got {method!r}.")
    if method == "prefix" and options.get("init", "real_activations") not in ("real_activations", "random"):
        raise ValueError(f"`peft.init` must be 'real_activations' or 'random', got {options['init']!r}.")
    return options


def apply_peft(lm: nn.Module, spec: Mapping[str, Any], tokenizer: Any | None = None) -> nn.Module:
    """Add the adapter ``spec`` describes to the causal LM ``lm`` and freeze everything else.

    Args:
        lm: a ``transformers`` causal LM.
        spec: ``{method: lora | prefix, ...peft options}`` (see the module docstring). LoRA defaults: ``r`` 8,
            ``lora_alpha`` 16, ``lora_dropout`` 0, ``target_modules`` ``[q_proj, v_proj]``. Prefix defaults:
            ``num_virtual_tokens`` 5, ``init`` ``real_activations``.
        tokenizer: tokenizes the initialisation text of a prefix (``init: real_activations``); without one, token
            ids ``1 … num_virtual_tokens`` are used.

    Returns:
        The model to call: ``lm`` itself with LoRA layers injected, or peft's ``PeftModelForCausalLM`` around it for
        a prefix. Only adapter parameters have ``requires_grad=True``.
    """
    options = check_peft_spec(spec)
    assert options is not None
    peft = _import_peft()
    method = options.pop("method")
    if method == "lora":
        options.setdefault("r", 8)
        options.setdefault("lora_alpha", 16)
        options.setdefault("lora_dropout", 0.0)
        options.setdefault("target_modules", ["q_proj", "v_proj"])
        lm.requires_grad_(False)
        lm = peft.inject_adapter_in_model(peft.LoraConfig(**options), lm)
        for name, parameter in lm.named_parameters():
            parameter.requires_grad_("lora_" in name)
        return lm
    init = options.pop("init", "real_activations")
    options.setdefault("num_virtual_tokens", 5)
    options.setdefault("task_type", "CAUSAL_LM")
    lm.requires_grad_(False)
    wrapped = peft.get_peft_model(lm, peft.PrefixTuningConfig(**options))
    if init == "real_activations":
        _init_prefix_from_activations(wrapped, options["num_virtual_tokens"], tokenizer)
    for name, parameter in wrapped.named_parameters():
        parameter.requires_grad_("prompt_encoder" in name)
    return wrapped


def is_prefix_model(model: nn.Module) -> bool:
    """Whether ``model`` is a peft prompt-learning model (prefix tuning)."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def prefix_length(model: nn.Module) -> int:
    """How many virtual tokens a prefix model prepends (0 for any other model)."""
    return int(model.active_peft_config.num_virtual_tokens) if is_prefix_model(model) else 0


@torch.no_grad()
def _init_prefix_from_activations(wrapped: nn.Module, length: int, tokenizer: Any | None) -> None:
    """Write the keys and values that the base model computes for ``length`` real tokens into the prefix embedding,
    in peft's layout: row t is ``[layer, key|value, kv head, head dim]`` flattened."""
    base = wrapped.get_base_model()
    if tokenizer is not None:
        ids = tokenizer(_PREFIX_INIT_TEXT, add_special_tokens=False)["input_ids"][:length]
    else:
        ids = list(range(1, length + 1))
    if len(ids) < length:
        raise ValueError(f"The prefix initialisation text has only {len(ids)} tokens; ask for fewer virtual tokens.")
    cache = base(input_ids=torch.tensor([ids]), use_cache=True).past_key_values
    layers = []
    for layer in range(len(cache.layers)):
        keys, values = cache.layers[layer].keys, cache.layers[layer].values  # [1, heads, length, head_dim] each
        layers.append(torch.stack([keys[0], values[0]]))  # [2, heads, length, head_dim]
    rows = torch.stack(layers).permute(3, 0, 1, 2, 4)  # [length, layers, 2, heads, head_dim]
    embedding = wrapped.prompt_encoder[wrapped.active_adapter].embedding.weight
    if rows[0].numel() != embedding.shape[1]:
        raise ValueError(
            f"The prefix embedding has {embedding.shape[1]} values per token but the model's keys and values have "
            f"{rows[0].numel()}; use `peft: {{init: random}}` for this architecture."
        )
    embedding.copy_(rows.reshape(length, -1).to(embedding.dtype))
