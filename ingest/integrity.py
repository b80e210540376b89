"""Finding damaged TFRecord files: name the file on failure, or skip bad records when asked.

On the happy path nothing is scanned. When ``tf.data`` raises ``DataLossError`` (which names
no file), :func:`explain` scans the split's files and re-raises naming the damaged one.
With ``pipeline.skip_corrupt``, :func:`find_damage` scans before training, the damaged files
are read record by record keeping only intact records, and the count is bounded.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import tensorflow as tf

from ingest.sources import tfrecord
from stoker.errors import CorruptDataError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class CorruptionReport:
    """Corrupt records skipped, per file, bounded by ``limit``."""

    limit: int
    per_file: dict[str, int] = dataclasses.field(default_factory=dict)
    # Bytes after a framing break, per file: they hold records nobody can count unless the
    # shard's count was recorded, so "1 skipped record" alone would understate the loss.
    unreadable_bytes: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.per_file.values())

    def add(self, path: str, count: int) -> None:
        self.per_file[path] = self.per_file.get(path, 0) + count
        if self.total > self.limit:
            raise CorruptDataError(
                f"{self.total} corrupt records (more than pipeline.max_corrupt={self.limit}) in "
                f"{', '.join(f'{p} ({n})' for p, n in self.per_file.items())}; re-create these files "
                f"or raise pipeline.max_corrupt"
            )

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"skipped_records": self.total, "files": dict(self.per_file)}
        if self.unreadable_bytes:
            out["unreadable_bytes"] = dict(self.unreadable_bytes)
        return out


def _lost(dataset, path: str, result: tfrecord.ScanResult) -> int:
    """Records lost in ``path``: from the shard's written count when known, else the scan's."""
    expected = dataset.expected_records(path)
    return max(expected - result.records, result.corrupt) if expected is not None else result.corrupt


def verify_framing(dataset, files: Iterable[str]) -> None:
    """Raise :class:`CorruptDataError` naming the first file whose record framing is broken."""
    for path in files:
        problem = tfrecord.check_framing(path, dataset.compression)
        if problem:
            raise CorruptDataError(
                f"{path} is corrupt ({problem}); re-run `make prepare DATASET={dataset.name}` or set "
                f'SET="pipeline.skip_corrupt=true" to skip bad records (bounded by pipeline.max_corrupt)'
            )


def find_damage(dataset, files: Iterable[str], report: CorruptionReport) -> list[str]:
    """Scan ``files``; count their bad records into ``report``; return the damaged ones."""
    damaged = []
    for path in files:
        result = tfrecord.scan(path, dataset.compression)
        lost = _lost(dataset, path, result)
        if result.problems or lost:
            damaged.append(path)
            counted = dataset.expected_records(path) is not None
            tail = (
                f"; the last {result.unreadable_bytes:,} bytes of the file cannot be framed"
                + ("" if counted else " and may hold more records (no count was recorded for this shard)")
                if result.unreadable_bytes
                else ""
            )
            log.warning(
                "skipping %d corrupt record(s) in %s: %s%s",
                lost,
                path,
                "; ".join(result.problems) or "short shard",
                tail,
            )
            if result.unreadable_bytes:
                report.unreadable_bytes[path] = result.unreadable_bytes
            report.add(path, lost)
    return damaged


def read_intact(path: str, compression: str) -> tf.data.Dataset:
    """Only the intact records of one damaged file."""
    return tfrecord.read_valid(path, compression)


# tf.data errors that can come from damaged files (raised at iteration, naming no file). A
# UnicodeDecodeError is what TensorFlow raises when its error message quotes invalid UTF-8.
READ_ERRORS = (tf.errors.DataLossError, tf.errors.InvalidArgumentError, UnicodeDecodeError)


def explain(error: Exception, dataset, files: Iterable[str]) -> CorruptDataError:
    """A :class:`CorruptDataError` naming the first damaged file behind a tf.data ``error``.

    TFRecord files are scanned record by record; other formats are read and parsed one file
    at a time until one fails the same way.
    """
    advice = f"re-run `make prepare DATASET={dataset.name}` or remove the file" + (
        ' (or set SET="pipeline.skip_corrupt=true" to skip bad records)' if dataset.format == "tfrecord" else ""
    )
    for path in files:
        problem = _problem(dataset, path)
        if problem:
            return CorruptDataError(f"{path} is corrupt ({problem}); {advice}")
    message = (getattr(error, "message", None) or str(error)).splitlines()[0]
    return CorruptDataError(
        f"reading dataset {dataset.name!r} failed ({message}) but no single "
        f"file reproduces it: check the files under {dataset.root} and the dataset's parse()"
    )


def _problem(dataset, path: str) -> str:
    if dataset.format == "tfrecord":
        return "; ".join(tfrecord.scan(path, dataset.compression).problems)
    try:
        for _ in dataset.read(tf.constant(path)).batch(256).map(dataset.parse):
            pass
    except (
        tf.errors.InvalidArgumentError,
        tf.errors.DataLossError,
        tf.errors.OutOfRangeError,
        tf.errors.InternalError,
        tf.errors.UnknownError,
    ) as err:
        return err.message.splitlines()[0][:300]
    except UnicodeDecodeError:
        return "bytes that are not valid UTF-8 where text was expected"
    return ""
