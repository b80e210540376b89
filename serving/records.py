"""Raw inputs as a serving client sends them: serialized tf.Example records.

A dataset whose files hold tf.Example records (TFRecord) is served its records unchanged; one
stored otherwise (Parquet rows) declares its columns as tf.Example features
(:meth:`ingest.dataset.Dataset.example_features`), and each row read by the dataset's own reader
becomes one such record here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow as tf


def to_example(row: Mapping[str, np.ndarray], features: Mapping[str, tf.io.FixedLenFeature]) -> bytes:
    """One row (column -> scalar) as a serialized tf.Example with ``features``' columns."""
    out = {}
    for name, spec in features.items():
        if name not in row:
            continue  # a column with a default (label, id) that this row does not have
        value = np.asarray(row[name]).reshape(-1)
        if spec.dtype == tf.string:
            out[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(v) for v in value]))
        elif spec.dtype.is_integer:
            out[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in value]))
        else:
            out[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in value]))
    return tf.train.Example(features=tf.train.Features(feature=out)).SerializeToString()


def file_records(dataset, path: str) -> Iterator[bytes]:
    """Host: the records of ``path`` in order, as serialized tf.Example, read with the dataset's own reader."""
    features = dataset.example_features()
    for record in dataset.read(tf.constant(path)).as_numpy_iterator():
        yield record if features is None else to_example(record, features)
