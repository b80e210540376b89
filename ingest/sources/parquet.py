"""Parquet files, read through tensorflow-io (in the tf.data runtime) or through pyarrow.

Both readers yield dicts of column tensors, one element per row, or, for the vectorized
parse, one element per batch of rows. The schema is checked on
the host against what the dataset declares before any data flows, so a missing column or a
column of the wrong type is one error naming the file and the column.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from stoker import files
from stoker.errors import DataError


def _accepts(fn, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: assume the older API
        return False


# Page CRCs came with pyarrow 13 (write_page_checksum, page_checksum_verification); the stack with
# TFDV pins pyarrow 10.0.1, which has neither: there stoker's shards are protected by the whole-file
# CRC32C that dataset_info.json records, and a shard copied without that file is not.
PAGE_CHECKSUMS = _accepts(pq.ParquetWriter.__init__, "write_page_checksum")
_WRITE_CRC = {"write_page_checksum": True} if PAGE_CHECKSUMS else {}
_VERIFY_CRC = {"page_checksum_verification": True} if PAGE_CHECKSUMS else {}

_TF_OF_ARROW = {pa.int64(): tf.int64, pa.int32(): tf.int32, pa.float32(): tf.float32, pa.float64(): tf.float64}


def check_schema(path: str, columns: Mapping[str, tf.DType]) -> None:
    """Raise :class:`DataError` naming ``path`` and the column if the schema does not match."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:  # ArrowNotImplementedError too: a damaged type field
        raise DataError(f"{path}: not a readable Parquet file ({err}); re-create it or remove it") from None
    for name, dtype in columns.items():
        index = schema.get_field_index(name)  # -1 when missing or present twice
        if index < 0:
            raise DataError(
                f"{path}: column {name!r} is {'duplicated' if schema.names.count(name) > 1 else 'missing'} "
                f"(file has {', '.join(schema.names)}); the dataset needs {', '.join(columns)}"
            )
        got = _TF_OF_ARROW.get(schema.field(index).type)
        if got != dtype:
            raise DataError(
                f"{path}: column {name!r} has type {schema.field(index).type}, expected {dtype.name}; "
                f"rewrite the file with that column as {dtype.name}"
            )


def read_tfio(path: tf.Tensor | str, columns: Mapping[str, tf.DType], rows: int | None = None) -> tf.data.Dataset:
    """Rows as dicts, read by ``tfio.IODataset.from_parquet`` (runs in the tf.data runtime).

    With ``rows``, elements are batches of up to ``rows`` rows in the same order.
    """
    import tensorflow_io as tfio  # Imported here: loading its ops costs a second.

    spec = {name: tf.TensorSpec([], dtype) for name, dtype in columns.items()}
    ds = tfio.IODataset.from_parquet(path, columns=spec)
    if rows:
        ds = ds.batch(rows)
    # tensorflow-io keys columns by bytes names; give them back their plain names (once per
    # batch when batched).
    return ds.map(
        lambda row: {name: row[name.encode() if isinstance(next(iter(row)), bytes) else name] for name in columns}
    )


def read_pyarrow(
    path: tf.Tensor | str, columns: Mapping[str, tf.DType], batch_rows: int = 4096, *, batched: bool = False
) -> tf.data.Dataset:
    """Rows as dicts, read by pyarrow in record batches on the host (a generator).

    ``batched`` keeps pyarrow's record batches of up to ``batch_rows`` rows as elements
    instead of unbatching them into rows.
    """
    spec = {name: tf.TensorSpec([None], dtype) for name, dtype in columns.items()}

    def batches(name: bytes):
        path = name.decode()
        try:
            with pq.ParquetFile(path, **_VERIFY_CRC) as f:  # where the writer stored page CRCs
                for batch in f.iter_batches(batch_size=batch_rows, columns=list(columns)):
                    yield {c: np.asarray(batch.column(c).to_numpy()) for c in columns}
        except (OSError, pa.ArrowException) as err:  # surfaces in tf.data as an error naming the file
            raise DataError(f"{path}: not a readable Parquet file ({err})") from None

    ds = tf.data.Dataset.from_generator(batches, args=(path,), output_signature=spec)
    return ds if batched else ds.unbatch()


def write(path: str, table: Mapping[str, np.ndarray], row_group: int = 4096) -> int:
    """Write a Parquet file atomically, with a CRC32 in every data page header where pyarrow can
    (:data:`PAGE_CHECKSUMS`); returns rows written.

    The page checksums let a reader that verifies them (:func:`read_pyarrow`) refuse a damaged
    page even without ``dataset_info.json``'s whole-file CRC (a copied shard, a foreign reader).
    """
    from pathlib import Path

    target = Path(path)
    tmp, target = files.atomic_target(target)
    pq.write_table(pa.table(dict(table)), tmp, row_group_size=row_group, **_WRITE_CRC)
    tmp.replace(target)
    return len(next(iter(table.values())))
