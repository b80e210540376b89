"""The row work of the table prepare job, as plain functions over chunks of columns.

A *chunk* is up to :data:`CHUNK_ROWS` rows of one source file held column by column (CSV
values as the text read, Parquet values as arrays). The Beam job (``ingest.prepare.table_job``)
applies these functions to chunks; none of them knows about Beam, so each is tested alone.

Order of the work: infer each column's type per chunk (:func:`kinds`), resolve them over files
(:func:`resolve_kinds`, an error when a column is numeric in one file and text in another),
summarize the chunks (:func:`summarize`: moments of numeric columns, value counts of string
columns and labels on the train split; missing values per split), merge the summaries
(:func:`merge`), turn the merged summary into a *plan* (:func:`plan`: means, stds, vocabularies,
label ids) and apply the plan to every chunk (:func:`transform`), the same function for both
splits, so training and evaluation see identical preprocessing.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from stoker.errors import DataError

CHUNK_ROWS = 1024  # rows per chunk: a Beam element, and the unit spread over shards (small data still fills them)
MISSING = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")  # CSV text read as a missing value
MISSING_ID, OOV_ID = 0, 1  # string ids: 0 missing, 1 out of vocabulary, 2.. the vocabulary by count
MAX_LISTED_BAD = 1000  # bad rows listed by file:line in dataset_info.json (all are counted)


@dataclasses.dataclass
class Chunk:
    """Rows ``rows`` (CSV line numbers, Parquet row indices) of the ``index``-th source file."""

    index: int  # the file's position in the sorted SOURCE listing
    path: str
    part: int  # the chunk's position in its file
    rows: np.ndarray  # int64 row numbers: the split hash and the example id come from them
    columns: dict[str, Any]  # name -> list of text (CSV) or array / list (Parquet)
    bad: list[str] = dataclasses.field(default_factory=list)  # "file:line: why" of rows skipped


# ---- reading --------------------------------------------------------------------------------
def csv_header(path: str) -> list[str]:
    """The header row of a CSV file; raises :class:`DataError` naming the file when it has none."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read the CSV header ({err}); fix or remove the file") from None
    header = [h.strip() for h in header]
    if not header or header == [""]:
        raise DataError(f"{path} is empty (no header row); remove it or write the column names on its first line")
    return header


def read_csv(index: int, path: str, *, skip_bad: bool) -> Iterator[Chunk]:
    """Chunks of a CSV file; a row with another number of fields than the header is an error
    naming file:line (with ``skip_bad``: skipped and listed in the chunk's ``bad``)."""
    header = csv_header(path)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        part, rows, values, bad = 0, [], [], []
        for row in reader:
            if not row:
                continue  # a blank line (often the last) holds no row
            if len(row) != len(header):
                why = f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)}"
                if not skip_bad:
                    raise DataError(f"{why}; fix the row or set SET=data.skip_bad_files=true to skip such rows")
                bad.append(why)
                continue
            rows.append(reader.line_num)
            values.append(row)
            if len(rows) == CHUNK_ROWS:
                yield _csv_chunk(index, path, part, header, rows, values, bad)
                part, rows, values, bad = part + 1, [], [], []
        if rows or bad:
            yield _csv_chunk(index, path, part, header, rows, values, bad)


def _csv_chunk(index: int, path: str, part: int, header: list[str], rows, values, bad) -> Chunk:
    columns = {name: [v[i].strip() for v in values] for i, name in enumerate(header)}
    return Chunk(index, path, part, np.asarray(rows, np.int64), columns, list(bad))


def read_parquet(index: int, path: str) -> Iterator[Chunk]:
    """Chunks of a Parquet file: numeric columns as float64 arrays (NaN for null), strings as lists."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    start = 0
    with pq.ParquetFile(path) as f:
        for part, batch in enumerate(f.iter_batches(batch_size=CHUNK_ROWS)):
            columns = {}
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                    columns[name] = column.to_pylist()
                else:
                    columns[name] = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            yield Chunk(index, path, part, np.arange(start, start + batch.num_rows, dtype=np.int64), columns)
            start += batch.num_rows


def parquet_kinds(path: str) -> dict[str, str]:
    """Column -> kind (int, float, string) from a Parquet schema; an error names an unsupported column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err}); re-create it or remove it") from None
    out = {}
    for field in schema:
        t = field.type
        if pa.types.is_integer(t) or pa.types.is_boolean(t):
            out[field.name] = "int"
        elif pa.types.is_floating(t) or pa.types.is_decimal(t):
            out[field.name] = "float"
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            out[field.name] = "string"
        else:
            raise DataError(
                f"{path}: column {field.name!r} has type {t}, which a table cannot hold (numbers and text only); "
                "write it as a number or a string, or drop it"
            )
    return out


# ---- types ----------------------------------------------------------------------------------
def _present(values: list[str]) -> np.ndarray:
    text = np.asarray(values, dtype=str)
    return text[~np.isin(text, MISSING)] if text.size else text


def kinds(chunk: Chunk, parquet: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Column -> (kind, example) of one chunk: kind int, float, string or empty (all missing);
    example is the first text value of a string column as ``'value' at file:line``."""
    if parquet is not None:
        return {name: (parquet[name], "") for name in chunk.columns}
    out = {}
    for name, values in chunk.columns.items():
        present = _present(values)
        if present.size == 0:
            out[name] = ("empty", "")
            continue
        try:
            present.astype(np.float64)
        except ValueError:
            first = next(i for i, v in enumerate(values) if v not in MISSING and not _is_number(v))
            out[name] = ("string", f"{values[first]!r} at {chunk.path}:{chunk.rows[first]}")
            continue
        integral = np.char.isdigit(np.char.lstrip(present, "+-")).all()
        out[name] = ("int" if integral else "float", "")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _widen(a: str, b: str) -> str:
    """The kind holding both: empty is neutral, int and float give float; a string anywhere wins."""
    if a == "empty" or a == b:
        return b
    if b == "empty":
        return a
    return "string" if "string" in (a, b) else "float"


def resolve_kinds(per_chunk: Iterable[tuple[str, dict[str, tuple[str, str]]]]) -> dict[str, str]:
    """Column -> kind over every file, from (path, kinds) of each chunk.

    Within a file a column with text among its numbers is text; between files a column that is
    numeric in one and text in another is an error naming both files and the text value.
    """
    files: dict[str, dict[str, tuple[str, str]]] = {}
    for path, chunk_kinds in sorted(per_chunk, key=lambda pk: pk[0]):
        seen = files.setdefault(path, {})
        for name, (kind, example) in chunk_kinds.items():
            old_kind, old_example = seen.get(name, ("empty", ""))
            seen[name] = (_widen(old_kind, kind), old_example or example)
    out: dict[str, str] = {}
    first: dict[str, tuple[str, str]] = {}  # column -> (file, text example) where its kind was first seen
    for path, file_kinds in files.items():
        for name, (kind, example) in file_kinds.items():
            before = out.get(name, "empty")
            if "string" in (before, kind) and {before, kind} & {"int", "float"}:
                text_file, text = (path, example) if kind == "string" else first[name]
                number_file = first[name][0] if kind == "string" else path
                raise DataError(
                    f"column {name!r} changes type between files: numbers in {number_file} but text "
                    f"({text or 'a text value'}) in {text_file}; make it one type in every file"
                )
            out[name] = _widen(before, kind)
            if kind != "empty" and name not in first:
                first[name] = (path, example)
    return out


# ---- the split ------------------------------------------------------------------------------
def validation_mask(chunk: Chunk, fraction: float, seed: int) -> np.ndarray:
    """True for the rows held out: a hash of (seed, file name, row number), so a row's split does not
    depend on the runner, the chunking or the other files."""
    if fraction <= 0:
        return np.zeros(len(chunk.rows), bool)
    base = np.uint64(zlib.crc32(f"{seed}\0{os.path.basename(chunk.path)}".encode()))
    with np.errstate(over="ignore"):  # splitmix64: wrapping uint64 arithmetic is the point
        z = chunk.rows.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + base
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


# ---- typed values ---------------------------------------------------------------------------
def numbers(values: Any) -> np.ndarray:
    """float64 values, NaN where missing (CSV text or a Parquet array)."""
    if isinstance(values, np.ndarray) and values.dtype != object and values.dtype.kind != "U":
        return values.astype(np.float64)
    text = np.asarray(values, dtype=str)
    if text.size == 0:
        return np.zeros([0])
    return np.where(np.isin(text, MISSING), "nan", text).astype(np.float64)


def strings(values: Any) -> list[str | None]:
    """Text values, None where missing."""
    return [None if v is None or v in MISSING else str(v) for v in values]
