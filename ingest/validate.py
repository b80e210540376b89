"""Data validation with TFDV (the TFX step): statistics and a schema when a dataset is prepared, and
a check of new or changed data against both before a run spends accelerator time on it.

What TFDV does is not re-written here: statistics come from ``tfdv.GenerateStatistics`` in one
Beam job (the prepare job's runner and flags), the schema from ``tfdv.infer_schema``, anomalies
and drift from ``tfdv.validate_statistics``. stoker adds three things around it:

- **Per-file statistics.** Every record batch carries the name of the file it came from in an
  extra column, and the job slices by it, so an anomaly names the file that has it (a report of
  "feature label drifted" without the shard is of little use). Bookkeeping columns (their names
  start with ``__stoker``) are stripped from the statistics and the schema afterwards.
- **Where they live.** ``<dataset root>/statistics.pb`` (train and validation splits, binary
  ``DatasetFeatureStatisticsList``), ``statistics.html`` (TFDV's view, train beside validation;
  opens in a browser) and ``schema.pbtxt``, inferred from train, the label marked categorical with
  an L-infinity drift comparator and numeric model inputs with a Jensen-Shannon one (never ids or
  file names). The user may edit the schema (domains, thresholds); ``ingest.validation`` keeps it.
- **Text where numbers were.** TFDV cannot hold one feature with two types in one job, so a
  reader puts a value that is text in a numeric column into a marker column
  (``__stoker_text:<column>``) instead; :func:`check` turns a marker seen in a file into the
  anomaly ``<column> -> numbers became text -> <file>``.

Runs on the host (the Beam job on the prepare's runner). Imports TFDV only when called: it
imports Beam's GCP modules, which print warnings at import.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stoker import cli, processes

log = logging.getLogger(__name__)

STATISTICS, SCHEMA, HTML = "statistics.pb", "schema.pbtxt", "statistics.html"
PRIVATE = "__stoker"  # prefix of bookkeeping columns (stripped from every output)
FILE_KEY = PRIVATE + "_file"  # the column that names each record's file
TEXT_PREFIX = PRIVATE + "_text:"  # marker column: text found in a numeric column
SLICE_PREFIX = FILE_KEY + "_"
DRIFT_L_INF = 0.1  # label: largest change of one class's share that is not drift
DRIFT_JSD = 0.1  # numeric features: Jensen-Shannon divergence that is not drift
# A file with fewer records is compared for drift only as part of the whole set: a class's share
# among 200 records varies by about 0.035 (one standard deviation, two even classes) by chance alone,
# and a histogram of fewer values drifts by chance more than the 0.1 thresholds allow.
MIN_DRIFT_RECORDS = 200
BATCH = 512  # records per Arrow record batch handed to TFDV
SMALL = 20_000  # records below which DirectRunner runs the statistics in-process (workers start slowly)

Batches = Callable[[str, str], Iterator[Any]]  # (split, path) -> Arrow record batches with FILE_KEY


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a dataset hands TFDV: its files per split, how to read one file as Arrow record batches,
    and which features are which.

    ``batches`` must be picklable (a module-level function or a ``functools.partial`` of one): Beam
    ships it to its workers.
    """

    splits: dict[str, list[str]]  # split -> files (train first)
    batches: Batches
    label: str
    int_label: bool = True  # False: the label is a string (a category anyway)
    numeric: tuple[str, ...] = ()  # numeric model inputs: a Jensen-Shannon drift comparator each
    ignore: tuple[str, ...] = ()  # ids, file names, encoded images: no domain, no drift
    records: int = 0  # records in all splits (0: unknown): small jobs run in-process

    @property
    def files(self) -> list[str]:
        """Every file of every split, sorted, each once."""
        return sorted({path for files in self.splits.values() for path in files})


@dataclasses.dataclass(frozen=True)
class Anomaly:
    """One finding: ``feature`` has ``kind`` (TFDV's short description) in ``file`` ('' : the whole set)."""

    feature: str
    kind: str
    description: str
    file: str = ""

    def __str__(self) -> str:
        return f"{self.feature} -> {self.kind} -> {self.file or '(all files together)'}: {self.description}"


def _tfdv():
    """TFDV, imported on first use (it imports Beam's GCP modules): their FutureWarnings about Python
    3.11 and grpcio, and TFDV's note that IPython is missing (it is needed only in notebooks; the HTML
    is made without it), are kept off the console (the note goes to the debug log)."""
    import sys

    if (module := sys.modules.get("tensorflow_data_validation")) is not None:
        return module
    import contextlib
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()) as said:
        warnings.simplefilter("ignore", FutureWarning)
        import tensorflow_data_validation as tfdv
    if said.getvalue().strip():
        log.debug("importing TFDV: %s", said.getvalue().strip())
    return tfdv


def with_file(batch: Any, name: str) -> Any:
    """``batch`` with the :data:`FILE_KEY` column naming ``name`` on every row."""
    import pyarrow as pa

    column = pa.array([[name.encode()]] * batch.num_rows, type=pa.list_(pa.binary()))
    return pa.RecordBatch.from_arrays([*batch.columns, column], [*batch.schema.names, FILE_KEY])


def tfrecord_batches(split: str, path: str, compression: str = "") -> Iterator[Any]:
    """Arrow record batches of the tf.Examples in one TFRecord file (tfx-bsl's decoder), each with
    the file's path. ``split`` is not used: a TFRecord file belongs to one split whole."""
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    decoder = example_coder.ExamplesToRecordBatchDecoder()
    chunk: list[bytes] = []
    for record in tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator():
        chunk.append(record)
        if len(chunk) == BATCH:
            yield with_file(decoder.DecodeBatch(chunk), path)
            chunk = []
    if chunk:
        yield with_file(decoder.DecodeBatch(chunk), path)


def parquet_batches(split: str, path: str) -> Iterator[Any]:
    """Arrow record batches of one Parquet shard, each column as a list array (TFDV's layout: one
    list of values per row), with the file's path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        for batch in f.iter_batches(batch_size=BATCH):
            offsets = pa.array(range(batch.num_rows + 1), type=pa.int32())
            lists = [pa.ListArray.from_arrays(offsets, column) for column in batch.columns]
            yield with_file(pa.RecordBatch.from_arrays(lists, batch.schema.names), path)


def hint(plan: Plan) -> Any:
    """A schema that only says an integer label is a category (statistics then count its classes,
    which the label's drift comparator needs)."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    if plan.int_label:
        feature = schema.feature.add(name=plan.label, type=schema_pb2.INT)
        feature.int_domain.is_categorical = True
    return schema


def _beam_options(runner: str, beam_args: list[str], records: int):
    """The prepare's Beam options (DirectRunner: one worker process per core), in-process below
    :data:`SMALL` records, where starting the workers takes longer than the work (as images do)."""
    from ingest.prepare import beam_job

    small = 0 < records < SMALL
    if runner == "DirectRunner" and small and not any(a.startswith("--direct_") for a in beam_args):
        beam_args = [*beam_args, "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    return beam_job._beam_options(runner, beam_args, os.cpu_count() or 1)


def _read(path: str, batches: Batches, split: str) -> Iterator[Any]:
    yield from batches(split, path)


def statistics(
    plan: Plan,
    splits: dict[str, list[str]] | None = None,
    *,
    schema: Any = None,
    runner: str = "DirectRunner",
    beam_args: list[str] | None = None,
) -> dict[str, Any]:
    """Split -> TFDV statistics of its files: the whole split ("All Examples") and one slice per file.

    One Beam job for all splits. ``schema`` (else :func:`hint`) tells TFDV which integer features
    are categories.
    """
    import apache_beam as beam

    tfdv = _tfdv()
    splits = {s: f for s, f in (splits or plan.splits).items() if f}
    options = tfdv.StatsOptions(
        schema=schema if schema is not None else hint(plan),
        slice_functions=[tfdv.experimental_get_feature_value_slicer({FILE_KEY: None})],
    )
    with tempfile.TemporaryDirectory(prefix="stoker-stats-") as tmp:
        beam_opts = _beam_options(runner, beam_args or [], plan.records)
        beam_log = os.path.join(tmp, "beam.log")
        processes.guard()  # Beam's worker processes (multi_processing) carry this run's mark: the watchdog ends them
        try:
            with cli.stderr_to(beam_log), beam.Pipeline(options=beam_opts) as p:  # Beam's workers print a lot
                for split, files in splits.items():
                    _ = (
                        p
                        | f"{split}: files" >> beam.Create(sorted(files))
                        | f"{split}: record batches" >> beam.FlatMap(_read, plan.batches, split)
                        | f"{split}: statistics" >> tfdv.GenerateStatistics(options)
                        | f"{split}: write" >> tfdv.WriteStatisticsToBinaryFile(os.path.join(tmp, f"{split}.pb"))
                    )
        except Exception:
            if os.path.isfile(beam_log):
                tail = Path(beam_log).read_text(errors="replace").splitlines()[-15:]
                log.error("the TFDV statistics job failed; its output ended:\n  %s", "\n  ".join(tail))
            raise
        return {split: _public(tfdv.load_stats_binary(os.path.join(tmp, f"{split}.pb"))) for split in splits}


def _drop_features(stats: Any, drop: Callable[[Any], bool]) -> Any:
    """``stats`` (changed in place) without the features for which ``drop(feature)`` is true."""
    for dataset in stats.datasets:
        keep = [f for f in dataset.features if not drop(f)]
        del dataset.features[:]
        dataset.features.extend(keep)
    return stats


def _public(stats: Any) -> Any:
    """``stats`` without bookkeeping features (the file column; markers are kept for :func:`check`)."""
    return _drop_features(stats, lambda f: list(f.path.step) == [FILE_KEY])


def _without_markers(stats: Any) -> Any:
    """A copy of ``stats`` without any bookkeeping feature."""
    out = type(stats)()
    out.CopyFrom(stats)
    return _drop_features(out, lambda f: f.path.step[0].startswith(PRIVATE))


def whole(stats: Any) -> Any:
    """The "All Examples" statistics of ``stats`` (no per-file slices, no markers)."""
    return _without_markers(_tfdv().get_slice_stats(stats, "All Examples"))


def per_file(stats: Any) -> dict[str, Any]:
    """File -> that file's statistics (markers kept)."""
    tfdv = _tfdv()
    names = [d.name for d in stats.datasets if d.name.startswith(SLICE_PREFIX)]
    return {n[len(SLICE_PREFIX) :]: tfdv.get_slice_stats(stats, n) for n in names}


def _clear_domain(schema: Any, feature: Any) -> None:
    if feature.WhichOneof("domain_info") == "domain":  # a named, top-level string domain
        keep = [d for d in schema.string_domain if d.name != feature.domain]
        del schema.string_domain[:]
        schema.string_domain.extend(keep)
    if feature.WhichOneof("domain_info"):
        feature.ClearField(feature.WhichOneof("domain_info"))


def infer_schema(train: Any, plan: Plan) -> Any:
    """The schema TFDV infers from the train statistics, with stoker's drift comparators set.

    The label gets an L-infinity comparator (largest change of one class's share); the features in
    ``plan.numeric`` a Jensen-Shannon one; ``plan.ignore`` (ids, file names, images) no domain, as a
    new id or file is not an anomaly.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = _tfdv().infer_schema(whole(train), infer_feature_shape=True)
    for feature in schema.feature:
        if feature.name == plan.label:
            if feature.type == schema_pb2.INT:  # a class id is a category (TFDV gives it a string domain, which
                _clear_domain(schema, feature)  # validation then calls a type mismatch)
                feature.int_domain.is_categorical = True
            feature.drift_comparator.infinity_norm.threshold = DRIFT_L_INF
        elif feature.name in plan.numeric:
            feature.drift_comparator.jensen_shannon_divergence.threshold = DRIFT_JSD
        elif feature.name in plan.ignore:
            _clear_domain(schema, feature)
    return schema


def write(root: str | Path, by_split: dict[str, Any], schema: Any | None, plan: Plan) -> Any:
    """Write statistics.pb and statistics.html into ``root``, and ``schema.pbtxt`` inferred from
    train unless ``schema`` (a kept one) is given. Returns the schema in force."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    tfdv = _tfdv()
    root = Path(root)
    wholes = {split: whole(stats) for split, stats in by_split.items()}
    joined = statistics_pb2.DatasetFeatureStatisticsList()
    for split, stats in wholes.items():
        for dataset in stats.datasets:
            joined.datasets.append(dataset)
            joined.datasets[-1].name = split
    (root / STATISTICS).write_bytes(joined.SerializeToString())
    names = list(wholes)
    lhs = wholes[names[0]]
    rhs = wholes[names[1]] if len(names) > 1 else None
    facets = tfdv.get_statistics_html(lhs, rhs, lhs_name=names[0], rhs_name=names[1] if rhs is not None else "")
    (root / HTML).write_text(page(root.name, wholes, facets))
    if schema is None:
        schema = infer_schema(by_split[names[0]], plan)
        tfdv.write_schema_text(schema, str(root / SCHEMA))
    return schema


def _summary(feature: Any) -> tuple[str, int, int, str]:
    """(type, values present, missing, what they look like) of one feature's statistics."""
    kind = feature.WhichOneof("stats")
    stats = getattr(feature, kind)
    common = stats.common_stats
    if kind == "num_stats":
        look = f"mean {stats.mean:.4g}, std {stats.std_dev:.4g}, min {stats.min:.4g}, max {stats.max:.4g}"
    elif kind == "string_stats":
        top = ", ".join(f"{v.value[:24]!r} ({v.frequency:.0f})" for v in stats.top_values[:3])
        look = f"{stats.unique} distinct; top {top}"
    else:
        look = ""
    return kind.replace("_stats", ""), int(common.num_non_missing), int(common.num_missing), look


def page(name: str, by_split: dict[str, Any], facets: str) -> str:
    """statistics.html: a plain table per feature and split (readable offline), then TFDV's Facets view
    (train beside validation; it loads its script from the web)."""
    import html

    rows = []
    for split, stats in by_split.items():
        for dataset in stats.datasets:
            for feature in dataset.features:
                kind, present, missing, look = _summary(feature)
                cells = [".".join(feature.path.step), split, kind, str(present), str(missing), look]
                rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("feature", "split", "type", "present", "missing", "values"))
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(name)}: statistics</title></head>"
        f"<body><h1>{html.escape(name)}: statistics (TFDV)</h1>\n<table border='1'><tr>{head}</tr>\n"
        + "\n".join(rows)
        + f"</table>\n<h2>Facets Overview</h2>\n{facets}\n</body></html>\n"
    )


def load(root: str | Path) -> tuple[Any, Any]:
    """(schema, train statistics) of a described dataset folder."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    root = Path(root)
    stats = statistics_pb2.DatasetFeatureStatisticsList.FromString((root / STATISTICS).read_bytes())
    train = statistics_pb2.DatasetFeatureStatisticsList()
    train.datasets.extend([d for d in stats.datasets if d.name == "train"])
    return _tfdv().load_schema_text(str(root / SCHEMA)), train


def without_drift(schema: Any, features: set[str] | None = None) -> Any:
    """A copy of ``schema`` without the drift comparators of ``features`` (None: of every feature)."""
    out = type(schema)()
    out.CopyFrom(schema)
    for feature in out.feature:
        if features is None or feature.name in features:
            feature.ClearField("drift_comparator")
    return out


def _records(stats: Any) -> int:
    return int(stats.datasets[0].num_examples) if stats.datasets else 0


def _markers(file_stats: Any, file: str) -> list[Anomaly]:
    """Text found in numeric columns of one file (the reader's marker columns)."""
    found = []
    for dataset in file_stats.datasets:
        for feature in dataset.features:
            name = feature.path.step[0] if feature.path.step else ""
            if not name.startswith(TEXT_PREFIX):
                continue
            stats = feature.string_stats
            count = stats.common_stats.num_non_missing
            example = stats.top_values[0].value if stats.top_values else "?"
            column = name[len(TEXT_PREFIX) :]
            found.append(Anomaly(column, "numbers became text", f"{count} value(s) are text (e.g. {example!r})", file))
    return found


def _anomalies(tfdv, stats: Any, schema: Any, train: Any, file: str) -> list[Anomaly]:
    anomalies = tfdv.validate_statistics(stats, schema, previous_statistics=train)
    found = [
        Anomaly(feature, info.short_description, info.description, file)
        for feature, info in sorted(anomalies.anomaly_info.items())
    ]
    if anomalies.HasField("dataset_anomaly_info") and anomalies.dataset_anomaly_info.description:
        d = anomalies.dataset_anomaly_info
        found.append(Anomaly("(dataset)", d.short_description, d.description, file))
    return found


def check_statistics(stats: Any, schema: Any, train: Any, *, label: str, per_file_label: bool) -> list[Anomaly]:
    """Anomalies of ``stats`` (with per-file slices) against ``schema`` and drift against ``train``.

    Each file is validated on its own slice (so a finding names its file); the whole set as well (a
    shift spread thinly over many files). ``per_file_label`` False: a file's label mix is not
    compared with train's (its files are not mixtures of the classes), the whole set's still is;
    a file under :data:`MIN_DRIFT_RECORDS` records is not compared for drift on its own either.
    """
    tfdv = _tfdv()
    file_schema = schema if per_file_label else without_drift(schema, {label})
    small_schema = without_drift(schema)
    found: list[Anomaly] = []
    files = per_file(stats)
    for name, file_stats in files.items():
        found += _markers(file_stats, name)
        use = file_schema if _records(file_stats) >= MIN_DRIFT_RECORDS else small_schema
        found += _anomalies(tfdv, _without_markers(file_stats), use, train, name)
    if len(files) > 1:  # one file: the whole set is that file, said once
        found += _anomalies(tfdv, whole(stats), schema, train, "")
    return found


def check(
    plan: Plan,
    files: list[str],
    schema: Any,
    train: Any,
    *,
    per_file_label: bool = True,
    runner: str = "DirectRunner",
    beam_args: list[str] | None = None,
) -> list[Anomaly]:
    """Anomalies of ``files`` (read with ``plan``) against ``schema`` and the ``train`` statistics, per file."""
    stats = statistics(plan, {"check": files}, schema=schema, runner=runner, beam_args=beam_args)["check"]
    return check_statistics(stats, schema, train, label=plan.label, per_file_label=per_file_label)


def files_are_mixtures(train_stats: Any, schema: Any, label: str) -> bool:
    """True when every train file's label mix is within the label's drift threshold of the whole
    split's: only then does a file's own label drift mean something (stoker's ``shapes`` writes
    class-pure shards, and a user's files may be sorted by class). Small files are judged too: a
    chance deviation there only turns a check off, never raises a false alarm."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    tfdv = _tfdv()
    train = whole(train_stats)
    drift = anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH
    for file_stats in per_file(train_stats).values():
        anomalies = tfdv.validate_statistics(_without_markers(file_stats), schema, previous_statistics=train)
        info = anomalies.anomaly_info.get(label)
        if info is not None and any(r.type == drift for r in info.reason):
            return False
    return True
