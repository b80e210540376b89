"""The rows of a table's source files as Arrow record batches for TFDV (``DATASET=table``).

TFDV describes a table by its *source* columns, under the names and types the user knows (the
prepared shards hold standardized numbers and vocabulary ids under ``x<i>``/``c<j>``, in which a
new category is only "out of vocabulary" and a re-prepare standardizes new data by its own
statistics). The rows are read by the prepare's own readers (``table_rows``: the same missing-value
text, the same seeded train/validation split), typed by the column types the dataset was prepared
with: a value that is text in a numeric column goes to a marker column (``ingest.validate``),
since one TFDV job cannot hold a column with two types.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from ingest import validate
from ingest.prepare import table_rows

ID_LIKE = re.compile(r"(^|[_\W])(id|uuid|key|file|path|filename)$", re.IGNORECASE)  # never drift-compared


def _number(text: Any) -> float | None | str:
    """A float, None (missing) or the text itself (not a number)."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    if isinstance(text, (int, float, np.integer, np.floating)):
        return float(text)
    if text in table_rows.MISSING:
        return None
    try:
        return float(text)
    except ValueError:
        return str(text)


def _columns(name: str, values: list, kind: str, is_label_int: bool) -> list[tuple[str, Any]]:
    """(feature, list array) pairs of one column of one chunk (a marker column where text was found)."""
    import pyarrow as pa

    if kind not in ("int", "float"):
        texts = [None if v is None or v in table_rows.MISSING else [str(v).encode()] for v in values]
        return [(name, pa.array(texts, type=pa.list_(pa.binary())))]
    parsed = [_number(v) for v in values]
    numbers = [[v] if isinstance(v, float) else None for v in parsed]
    if is_label_int:
        numbers = [[int(v[0])] if v is not None else None for v in numbers]
        out = [(name, pa.array(numbers, type=pa.list_(pa.int64())))]
    else:
        out = [(name, pa.array(numbers, type=pa.list_(pa.float32())))]
    if any(isinstance(v, str) for v in parsed):
        marks = [[v.encode()] if isinstance(v, str) else None for v in parsed]
        out.append((validate.TEXT_PREFIX + name, pa.array(marks, type=pa.list_(pa.binary()))))
    return out


def batches(
    split: str, path: str, *, types: dict[str, str], label: str, label_int: bool, fraction: float, seed: int
) -> Iterator[Any]:
    """Record batches of one source file's rows of ``split`` ("train", "validation"; else all rows)."""
    import pyarrow as pa

    reader = (
        table_rows.read_parquet(0, path) if path.endswith(".parquet") else table_rows.read_csv(0, path, skip_bad=True)
    )
    for chunk in reader:
        held = table_rows.validation_mask(chunk, fraction, seed)
        keep = {"train": ~held, "validation": held}.get(split, np.ones(len(chunk.rows), bool))
        pairs: list[tuple[str, Any]] = []
        for name, values in chunk.columns.items():
            kept = [v for v, k in zip(values, keep, strict=True) if k]
            kind = types.get(name, "string")  # a column the dataset never had: text (one type in every file)
            pairs += _columns(name, kept, kind, name == label and label_int)
        if int(keep.sum()):
            batch = pa.RecordBatch.from_arrays([a for _, a in pairs], [n for n, _ in pairs])
            yield validate.with_file(batch, path)
