"""Building a ``transformers`` config from YAML-friendly data, for models initialised at random (tests, smoke runs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import AutoConfig, PretrainedConfig


def resolve_model_config(config: PretrainedConfig | Mapping[str, Any], argument: str, example: str) -> PretrainedConfig:
    """``config`` itself, or the config its mapping describes (``model_type`` plus that type's fields).

    Raises:
        ValueError: a mapping without ``model_type``; the message names ``argument`` and an ``example`` type.
    """
    if isinstance(config, PretrainedConfig):
        return config
    options = dict(config)
    model_type = options.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"`{argument}` needs a 'model_type' (e.g. '{example}') to build the model from.")
    return AutoConfig.for_model(model_type, **options)
