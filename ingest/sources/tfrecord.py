"""TFRecord files: reading (plain and GZIP), writing with counts, and a host-side integrity scan.

``tf.data.TFRecordDataset`` raises ``DataLossError`` without naming the file, and returns
without error for a shard cut inside a record header, for trailing garbage and for an empty
shard. The scan here reads the framing itself (length, masked CRC32C of the length, data,
masked CRC32C of the data) so stoker can name the file and, when asked, skip bad records.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import tensorflow as tf

from stoker import files, storage

_MASK_DELTA = 0xA282EAD8
_MAX_RECORD = 1 << 31  # A declared length past this is damage, not data: never allocate it.


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read(path: tf.Tensor | str, compression: str = "") -> tf.data.Dataset:
    """Serialized records of one file (runs in the tf.data runtime)."""
    return tf.data.TFRecordDataset(path, compression_type=compression or None)


def frame(record: bytes) -> bytes:
    """One record in TFRecord framing."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", _masked_crc(length)) + record + struct.pack("<I", _masked_crc(record))


def _open(path: str | Path, compression: str) -> io.BufferedIOBase:
    if storage.is_url(path):
        raw = storage.open_file(path, "rb")
        return gzip.GzipFile(fileobj=raw, mode="rb") if compression == "GZIP" else raw
    return gzip.open(path, "rb") if compression == "GZIP" else open(path, "rb")  # noqa: SIM115


@dataclasses.dataclass
class ScanResult:
    """What a scan found in one file: good record count and the damage, in words."""

    path: str
    records: int = 0
    corrupt: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    unreadable_bytes: int = 0  # after a framing break: the rest of the file, which holds an unknown count

    def _end(self, f: io.BufferedIOBase, consumed: int, problem: str) -> None:
        """The framing broke ``consumed`` bytes ago: nothing from there to the end can be read."""
        self.corrupt += 1
        self.problems.append(problem)
        self.unreadable_bytes = consumed + len(f.read())  # uncompressed bytes for GZIP

    @property
    def ok(self) -> bool:
        return not self.problems


def iter_records(path: str | Path, compression: str = "", result: ScanResult | None = None) -> Iterator[bytes]:
    """Yield the records whose CRCs check; note every problem in ``result``.

    A bad data CRC skips that one record (its length was intact). A bad length CRC,
    a truncation or an impossible length ends the file: nothing after it can be framed.
    """
    result = result if result is not None else ScanResult(str(path))
    try:
        with _open(path, compression) as f:
            while True:
                offset = f.tell() if compression != "GZIP" else result.records + result.corrupt
                head = f.read(12)
                if not head:
                    return
                if len(head) < 12:
                    result._end(f, len(head), f"truncated record header at {offset}")
                    return
                (length,) = struct.unpack("<Q", head[:8])
                if struct.unpack("<I", head[8:])[0] != _masked_crc(head[:8]) or length > _MAX_RECORD:
                    result._end(f, 12, f"corrupt record length at {offset}; the rest of the file is unreadable")
                    return
                body = f.read(length + 4)
                if len(body) < length + 4:
                    result._end(f, 12 + len(body), f"truncated record at {offset} ({len(body)} of {length + 4} bytes)")
                    return
                if struct.unpack("<I", body[length:])[0] != _masked_crc(body[:length]):
                    result.corrupt += 1
                    result.problems.append(f"CRC mismatch in record at {offset}")
                    continue
                result.records += 1
                yield body[:length]
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        result.corrupt += 1
        result.problems.append(f"unreadable: {err}")


class FramingError(ValueError):
    """A record's framing (length, its CRC, or the file's end) is broken; the message says where."""


def frames(path: str | Path, compression: str = "") -> Iterator[tuple[int, int]]:
    """(offset, bytes) of every record, walking the 12-byte headers only (no data CRCs).

    Raises :class:`FramingError` at the first header that is cut, whose length CRC fails, that
    declares an impossible length, or whose record runs past the end of the file. TensorFlow's
    reader trusts a length whose own CRC checks: a crafted length of 2**40 makes it allocate
    that much and the process dies (SIGSEGV, no Python error), hence this walk first.
    """
    try:
        with _open(path, compression) as f:
            offset = 0
            size = None if compression == "GZIP" else storage.size(path)
            while True:
                head = f.read(12)
                if not head:
                    return
                if len(head) < 12:
                    raise FramingError(f"truncated record header at {offset}")
                (length,) = struct.unpack("<Q", head[:8])
                if struct.unpack("<I", head[8:])[0] != _masked_crc(head[:8]):
                    raise FramingError(f"corrupt record length at {offset}")
                if length > _MAX_RECORD:
                    raise FramingError(f"record at {offset} declares {length} bytes")
                if size is None:
                    skipped = len(f.read(length + 4))
                else:
                    f.seek(length + 4, io.SEEK_CUR)  # gfile's seek returns None: ask tell()
                    skipped = min(f.tell(), size) - offset - 12
                if skipped < length + 4:
                    raise FramingError(f"truncated record at {offset} ({skipped} of {length + 4} bytes)")
                yield offset, 12 + length + 4
                offset += 12 + length + 4
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise FramingError(f"unreadable: {err}") from None


def check_framing(path: str | Path, compression: str = "") -> str:
    """'' when every record header of ``path`` holds (see :func:`frames`), else the problem."""
    try:
        for _ in frames(path, compression):
            pass
    except FramingError as err:
        return str(err)
    return ""


def scan(path: str | Path, compression: str = "") -> ScanResult:
    """Check every record of one file; returns counts and problems (never raises on damage)."""
    result = ScanResult(str(path))
    for _ in iter_records(path, compression, result):
        pass
    return result


def read_valid(path: str, compression: str = "") -> tf.data.Dataset:
    """Only the intact records of a damaged file (host Python; used for the few bad files)."""
    return tf.data.Dataset.from_generator(
        lambda: iter_records(path, compression), output_signature=tf.TensorSpec([], tf.string)
    )


def write(path: str | Path, records: list[bytes] | Iterator[bytes], compression: str = "") -> tuple[int, int]:
    """Write records atomically (temp name, then rename); returns (records, bytes on disk).

    A URL is written under its final name: an object appears whole when its upload completes
    (a rename on object storage is a copy), and readers trust only shards dataset_info.json lists."""
    if storage.is_url(path):
        return _write_object(str(path), records, compression)
    path = Path(path)
    tmp, path = files.atomic_target(path)
    count = 0
    with gzip.open(tmp, "wb") if compression == "GZIP" else open(tmp, "wb") as f:  # noqa: SIM115
        for record in records:
            f.write(frame(record))
            count += 1
    tmp.replace(path)
    return count, path.stat().st_size


def _write_object(url: str, records: list[bytes] | Iterator[bytes], compression: str) -> tuple[int, int]:
    count = 0
    with storage.open_file(url, "wb") as raw:
        out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if compression == "GZIP" else raw
        for record in records:
            out.write(frame(record))
            count += 1
        if out is not raw:
            out.close()  # writes the gzip trailer into ``raw``
    return count, storage.size(url)
