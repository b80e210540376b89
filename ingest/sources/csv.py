"""CSV files with a header row, read by ``tf.data.experimental.CsvDataset`` (no Python per row)."""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from stoker.errors import DataError


def check_header(path: str, columns: Mapping[str, tf.DType]) -> None:
    """Raise :class:`DataError` naming ``path`` if the header lacks a declared column."""
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip().split(",")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the CSV header ({err})") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: CSV header {header} lacks column(s) {missing}; add them or fix the dataset's columns")


def read(path: tf.Tensor | str, columns: Mapping[str, tf.DType], header: list[str]) -> tf.data.Dataset:
    """Rows as dicts of the declared ``columns``; ``header`` is the file's column order."""
    select = [header.index(c) for c in columns]
    ordered = sorted(zip(select, columns.items()))
    defaults = [tf.constant([], dtype=dtype) for _, (_, dtype) in ordered]  # empty: a required field
    ds = tf.data.experimental.CsvDataset(path, defaults, header=True, select_cols=[i for i, _ in ordered])
    names = [name for _, (name, _) in ordered]
    return ds.map(lambda *values: dict(zip(names, values)))


def validate(path: str, columns: Mapping[str, tf.DType]) -> str:
    """The first malformed row of ``path`` in words ('' when every row parses): host-side, used to
    name the file and line behind a ``CsvDataset`` error."""
    import csv as pycsv

    casts = {tf.int64: int, tf.int32: int, tf.float32: float, tf.float64: float, tf.string: str}
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = pycsv.reader(f)
            header = next(rows, [])
            index = {c: header.index(c) for c in columns if c in header}
            if len(index) < len(columns):
                return f"header {header} lacks {sorted(set(columns) - set(index))}"
            for line, row in enumerate(rows, start=2):
                for name, i in index.items():
                    try:
                        casts[columns[name]](row[i])
                    except (IndexError, ValueError):
                        return f"line {line}: field {name!r} is not a valid {columns[name].name}"
    except (OSError, UnicodeDecodeError, pycsv.Error) as err:
        return f"unreadable: {err}"
    return ""
