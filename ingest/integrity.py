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
        return {"skipped_records": self.total, "files": dict(self.per_file)}


def _lost(dataset, path: str, result: tfrecord.ScanResult) -> int:
    """Records lost in ``path``: from the shard's written count when known, else the scan's."""
    expected = dataset.expected_records(path)
    return max(expected - result.records, result.corrupt) if expected is not None else result.corrupt


def find_damage(dataset, files: Iterable[str], report: CorruptionReport) -> list[str]:
    """Scan ``files``; count their bad records into ``report``; return the damaged ones."""
    damaged = []
    for path in files:
        result = tfrecord.scan(path, dataset.compression)
        lost = _lost(dataset, path, result)
        if result.problems or lost:
            damaged.append(path)
            log.warning("skipping %d corrupt record(s) in %s: %s", lost, path, "; ".join(result.problems) or "short shard")
            report.add(path, lost)
    return damaged


def read_intact(path: str, compression: str) -> tf.data.Dataset:
    """Only the intact records of one damaged file."""
    return tfrecord.read_valid(path, compression)


def explain(error: tf.errors.DataLossError, dataset, files: Iterable[str]) -> CorruptDataError:
    """A :class:`CorruptDataError` naming the first damaged file behind ``error``."""
    for path in files:
        result = tfrecord.scan(path, dataset.compression)
        if result.problems:
            return CorruptDataError(
                f"{path} is corrupt ({'; '.join(result.problems)}); re-run `make prepare DATASET={dataset.name}` "
                f"or set SET=\"pipeline.skip_corrupt=true\" to skip bad records (bounded by pipeline.max_corrupt)"
            )
    return CorruptDataError(f"tf.data reported data loss ({error.message}) in dataset {dataset.name!r}; no file scan "
                            f"found it: check the files under {dataset.root}")
