"""Data validation with TFDV (the TFX step): statistics and a schema when a dataset is prepared, and
a check of new or changed data against both before a run spends accelerator time on it.

What TFDV does is not re-written here: statistics come from ``tfdv.GenerateStatistics`` in one
Beam job (the prepare job's runner and flags), the schema from ``tfdv.infer_schema``, anomalies
and drift from ``tfdv.validate_statistics``. stoker adds two things around it:

- **Per-file statistics.** Every record batch carries the name of the file it came from in an
  extra column, and the job slices by it, so an anomaly names the file that has it (a report of
  "feature label drifted" without the shard is of little use). The column is stripped from the
  statistics and the schema afterwards.
- **Where they live.** ``<dataset root>/statistics.pb`` (train and validation splits, binary
  ``DatasetFeatureStatisticsList``), ``statistics.html`` (TFDV's view, train beside validation;
  opens in a browser) and ``schema.pbtxt``, inferred from train, the label marked categorical with
  an L-infinity drift comparator and numeric features with a Jensen-Shannon one. The user may edit
  the schema (domains, thresholds); a later prepare keeps an edited schema.

Runs on the host. Imports TFDV (and so Beam's GCP modules) only when called.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATISTICS, SCHEMA, HTML = "statistics.pb", "schema.pbtxt", "statistics.html"
FILE_KEY = "__stoker_file"  # the column that names each record's file (stripped from every output)
SLICE_PREFIX = FILE_KEY + "_"
DRIFT_L_INF = 0.1  # label: largest change of one class's share that is not drift
DRIFT_JSD = 0.1  # numeric features: Jensen-Shannon divergence that is not drift
BATCH = 512  # records per Arrow record batch handed to TFDV


@dataclasses.dataclass(frozen=True)
class Anomaly:
    """One finding: ``feature`` has ``kind`` (TFDV's short description) in ``file`` ('' : the whole split)."""

    feature: str
    kind: str
    description: str
    file: str = ""

    def __str__(self) -> str:
        where = self.file or "(all files)"
        return f"{self.feature} -> {self.kind} -> {where}: {self.description}"


def _tfdv():
    import tensorflow_data_validation as tfdv  # heavy (Beam's GCP modules): only where used

    return tfdv


def tfrecord_batches(path: str) -> Iterator[Any]:
    """Arrow record batches of the tf.Examples in one TFRecord file, each with the file's name."""
    import pyarrow as pa
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    decoder = example_coder.ExamplesToRecordBatchDecoder()
    name = os.path.basename(path).encode()
    chunk: list[bytes] = []
    compression = "GZIP" if path.endswith(".gz") else ""
    for record in tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator():
        chunk.append(record)
        if len(chunk) == BATCH:
            yield _with_file(decoder.DecodeBatch(chunk), name, pa)
            chunk = []
    if chunk:
        yield _with_file(decoder.DecodeBatch(chunk), name, pa)


def _with_file(batch, name: bytes, pa):
    column = pa.array([[name]] * batch.num_rows, type=pa.list_(pa.binary()))
    return pa.RecordBatch.from_arrays([*batch.columns, column], [*batch.schema.names, FILE_KEY])


def categorical(label_key: str, int_label: bool = True) -> Any:
    """A schema that only says the label is a category (statistics then count its classes)."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    feature = schema.feature.add(name=label_key)
    if int_label:
        feature.type = schema_pb2.INT
        feature.int_domain.is_categorical = True
    return schema


def statistics(
    files: Iterable[str],
    *,
    schema: Any = None,
    runner: str = "DirectRunner",
    beam_args: list[str] | None = None,
    batches=tfrecord_batches,
) -> Any:
    """TFDV statistics of ``files``: the whole set ("All Examples") and one slice per file.

    One Beam job; ``batches(path)`` yields a file's Arrow record batches with :data:`FILE_KEY`.
    ``schema`` tells TFDV which integer features are categories (their classes are counted, which
    the label's drift comparator needs).
    """
    import tempfile

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    tfdv = _tfdv()
    options = tfdv.StatsOptions(
        schema=schema, slice_functions=[tfdv.experimental_get_feature_value_slicer({FILE_KEY: None})]
    )
    with tempfile.TemporaryDirectory(prefix="stoker-stats-") as tmp:
        out = os.path.join(tmp, "stats.pb")
        with beam.Pipeline(options=PipelineOptions([f"--runner={runner}", *(beam_args or [])])) as p:
            _ = (
                p
                | "files" >> beam.Create(sorted(files))
                | "record batches" >> beam.FlatMap(batches)
                | "statistics" >> tfdv.GenerateStatistics(options)
                | "write" >> tfdv.WriteStatisticsToBinaryFile(out)
            )
        stats = tfdv.load_stats_binary(out)
    for dataset in stats.datasets:  # the file column is bookkeeping, not a feature of the data
        keep = [f for f in dataset.features if list(f.path.step) != [FILE_KEY]]
        del dataset.features[:]
        dataset.features.extend(keep)
    return stats


def whole(stats: Any) -> Any:
    """The "All Examples" statistics of ``stats`` (no per-file slices)."""
    return _tfdv().get_slice_stats(stats, "All Examples")


def per_file(stats: Any) -> dict[str, Any]:
    """File name -> that file's statistics."""
    tfdv = _tfdv()
    names = [d.name for d in stats.datasets if d.name.startswith(SLICE_PREFIX)]
    return {n[len(SLICE_PREFIX) :]: tfdv.get_slice_stats(stats, n) for n in names}


def infer_schema(train: Any, *, label_key: str, numeric: tuple[str, ...] = ()) -> Any:
    """The schema TFDV infers from the train statistics, with stoker's drift comparators set.

    The label gets an L-infinity comparator (largest change of one class's share); the features
    in ``numeric`` (model inputs that are quantities, not ids) a Jensen-Shannon one.
    """
    tfdv = _tfdv()
    schema = tfdv.infer_schema(whole(train), infer_feature_shape=True)
    for feature in schema.feature:
        if feature.name == label_key:
            if feature.type == 2:  # INT: a class id is a category, not a quantity
                feature.int_domain.is_categorical = True
            feature.drift_comparator.infinity_norm.threshold = DRIFT_L_INF
        elif feature.name in numeric:
            feature.drift_comparator.jensen_shannon_divergence.threshold = DRIFT_JSD
    return schema


def describe(
    root: str | Path,
    splits: dict[str, list[str]],
    *,
    label_key: str,
    numeric: tuple[str, ...] = (),
    runner: str = "DirectRunner",
    beam_args=None,
) -> dict[str, Any]:
    """Write statistics.pb, statistics.html and schema.pbtxt into ``root`` (a prepared dataset's folder).

    ``splits``: split -> its files. An edited ``schema.pbtxt`` already in ``root`` is kept.
    Returns split -> statistics.
    """
    tfdv = _tfdv()
    from tensorflow_metadata.proto.v0 import statistics_pb2

    root = Path(root)
    hint = categorical(label_key)
    by_split = {s: statistics(f, schema=hint, runner=runner, beam_args=beam_args) for s, f in splits.items() if f}
    joined = statistics_pb2.DatasetFeatureStatisticsList()
    for split, stats in by_split.items():
        for dataset in whole(stats).datasets:
            dataset.name = split
            joined.datasets.append(dataset)
    (root / STATISTICS).write_bytes(joined.SerializeToString())
    names = list(by_split)
    rhs = whole(by_split[names[1]]) if len(names) > 1 else None
    html = tfdv.get_statistics_html(
        whole(by_split[names[0]]), rhs, lhs_name=names[0], rhs_name=names[1] if rhs is not None else ""
    )
    (root / HTML).write_text(html)
    if not (root / SCHEMA).is_file():
        schema = infer_schema(by_split["train"], label_key=label_key, numeric=numeric)
        tfdv.write_schema_text(schema, str(root / SCHEMA))
    return by_split


def load(root: str | Path) -> tuple[Any, Any]:
    """(schema, train statistics) of a described dataset folder."""
    tfdv = _tfdv()
    from tensorflow_metadata.proto.v0 import statistics_pb2

    root = Path(root)
    stats = statistics_pb2.DatasetFeatureStatisticsList.FromString((root / STATISTICS).read_bytes())
    train = statistics_pb2.DatasetFeatureStatisticsList()
    train.datasets.extend([d for d in stats.datasets if d.name == "train"])
    return tfdv.load_schema_text(str(root / SCHEMA)), train


def check(files: list[str], schema: Any, train: Any, *, runner: str = "DirectRunner", beam_args=None) -> list[Anomaly]:
    """Anomalies of ``files`` against ``schema``, and drift against the ``train`` statistics, per file.

    Each file is validated on its own slice (so a finding names its file); the drift of the whole set
    is checked as well (a shift spread thinly over many files).
    """
    tfdv = _tfdv()
    stats = statistics(files, schema=schema, runner=runner, beam_args=beam_args)
    found: list[Anomaly] = []
    for name, file_stats in [*per_file(stats).items(), ("", whole(stats))]:
        anomalies = tfdv.validate_statistics(file_stats, schema, previous_statistics=train)
        for feature, info in sorted(anomalies.anomaly_info.items()):
            found.append(Anomaly(feature, info.short_description, info.description, name))
        if anomalies.HasField("dataset_anomaly_info") and anomalies.dataset_anomaly_info.description:
            d = anomalies.dataset_anomaly_info
            found.append(Anomaly("(dataset)", d.short_description, d.description, name))
    return found
