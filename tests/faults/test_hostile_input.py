"""Randomly corrupted files end in a stoker error naming the file, or in exact values.

Never a crash of the interpreter, a hang (pytest-timeout bounds each test), or wrong values
passed on silently. Hypothesis draws a fixed number of cases (derandomized) so CI time is
bounded. Each case damages a fresh copy of small files written by stoker's own writers.
"""

from __future__ import annotations

import collections
import io
import json
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ingest import integrity, pipeline
from ingest.dataset import INFO_FILE, Dataset
from ingest.datasets.clicks import COLUMNS, Clicks, table
from ingest.options import DataOptions, PipelineOptions
from ingest.sources import csv, images, parquet, tfrecord
from ingest.testing import Indexed, write_indexed
from stoker.errors import DataError

CASES = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,  # no replay of examples saved by an earlier run: CI and a laptop draw the same cases
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def damage(draw, size: int):
    """A mutation of a file of ``size`` bytes: flips, a cut, garbage, emptiness or a crafted length."""
    kind = draw(st.sampled_from(["flip", "flips", "cut", "append", "empty", "huge_length"]))
    if kind == "flip":
        return kind, [(draw(st.integers(0, size - 1)), draw(st.integers(1, 255)))]
    if kind == "flips":
        return kind, draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=2, max_size=8))
    if kind == "cut":
        return kind, draw(st.integers(0, size - 1))
    if kind == "append":
        return kind, draw(st.binary(min_size=1, max_size=64))
    return kind, None


def apply(path: Path, mutation) -> None:
    kind, arg = mutation
    data = bytearray(path.read_bytes())
    if kind in ("flip", "flips"):
        for at, xor in arg:
            data[at] ^= xor
    elif kind == "cut":
        data = data[:arg]
    elif kind == "append":
        data += arg
    elif kind == "empty":
        data = bytearray()
    elif kind == "huge_length":  # a length of 2**40 with a valid CRC: TensorFlow's reader dies on it
        length = struct.pack("<Q", 1 << 40)
        data[0:12] = length + struct.pack("<I", tfrecord._masked_crc(length))
    path.write_bytes(bytes(data))


def _read_all(ds: Dataset, split: str, options: PipelineOptions) -> tuple[list[dict], pipeline.Built | None]:
    built = pipeline.build(ds, split, options, batch_size=7, training=False, repeat=False)
    out = []
    try:
        for batch in built.dataset:
            out += [dict(zip(batch, vals)) for vals in zip(*(np.asarray(v).tolist() for v in batch.values()))]
    except integrity.READ_ERRORS as err:
        raise integrity.explain(err, ds, built.files) from None
    return out, built


# ---- TFRecord (written by stoker, with dataset_info.json) -------------------------------------
@pytest.fixture(scope="module")
def tfrecord_master(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfr")
    paths = write_indexed(root / "indexed", "train", files=2, per_file=12)
    shards = [{"file": Path(p).name, "num_examples": 12, "bytes": Path(p).stat().st_size} for p in paths]
    (root / "indexed" / INFO_FILE).write_text(json.dumps({"splits": {"train": {"num_examples": 24, "shards": shards}}}))
    return root


@CASES
@given(data=st.data(), skip=st.booleans(), with_info=st.booleans())
def test_tfrecord_damage_is_named_or_exact(tfrecord_master, tmp_path, data, skip, with_info):
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    shutil.copytree(tfrecord_master, root, dirs_exist_ok=True)
    if not with_info:
        (root / "indexed" / INFO_FILE).unlink()
    victim = root / "indexed" / "train-00001-of-00002.tfrecord"
    apply(victim, data.draw(damage(victim.stat().st_size)))
    ds = Indexed(DataOptions(name="indexed", data_dir=str(root)))
    options = PipelineOptions(skip_corrupt=skip, max_corrupt=24)
    try:
        rows, built = _read_all(ds, "train", options)
    except DataError as err:
        assert "train-00001-of-00002.tfrecord" in str(err)
        return
    originals = {i: [3.0 * i, -float(i)] for i in range(24)}
    for row in rows:  # every value passed on is exactly what was written
        assert row["value"] == originals[row["id"]]
    ids = sorted(r["id"] for r in rows)
    assert len(ids) == len(set(ids))
    lost = 24 - len(ids)
    if lost:  # only a skip that was counted may lose records, and only without a size record to catch it
        assert skip and built.corrupt.total >= 1 or not with_info and victim_records_cut(victim)


def victim_records_cut(path: Path) -> bool:
    """A shard cut exactly at a record boundary is a valid shorter file: only a size record catches it."""
    return tfrecord.scan(path).ok


# ---- Parquet -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clicks_master(tmp_path_factory):
    root = tmp_path_factory.mktemp("pq")
    Clicks(DataOptions(name="clicks", data_dir=str(root), train_examples=60, eval_examples=20, shards=2)).prepare()
    return root


@CASES
@given(data=st.data(), reader=st.sampled_from(["tfio", "pyarrow"]))
def test_parquet_damage_is_named_or_exact(clicks_master, tmp_path, data, reader):
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    shutil.copytree(clicks_master, root, dirs_exist_ok=True)
    victim = root / "clicks" / "train-00001-of-00002.parquet"
    mutation = data.draw(damage(victim.stat().st_size))
    if mutation[0] == "huge_length":
        mutation = ("flip", [(victim.stat().st_size - 9, 0x40)])  # the footer length field
    apply(victim, mutation)
    ds = Clicks(DataOptions(name="clicks", data_dir=str(root), parquet_reader=reader))
    if victim.read_bytes() == (clicks_master / "clicks" / victim.name).read_bytes():  # flips that cancel
        rows, _ = _read_all(ds, "train", PipelineOptions())
        assert sorted(r["id"] for r in rows) == list(range(60))
        return
    # A prepared shard has a whole-file CRC32C in dataset_info.json: every change is caught before
    # a row is passed on, whichever reader would have been fooled by it.
    with pytest.raises(DataError, match="train-00001-of-00002.parquet"):
        _read_all(ds, "train", PipelineOptions())


@pytest.mark.skipif(
    not parquet.PAGE_CHECKSUMS, reason="pyarrow < 13 writes no page CRCs: a copied shard has no checksum of its own"
)
@CASES
@given(data=st.data())
def test_parquet_without_dataset_info_is_named_or_exact(clicks_master, tmp_path, data):
    """A shard read without its dataset_info (copied elsewhere): the page CRCs stoker writes are
    verified by the pyarrow reader, so a damaged file gives a named error or exactly its rows."""
    src = clicks_master / "clicks" / "train-00000-of-00002.parquet"
    victim = Path(tempfile.mkdtemp(dir=tmp_path)) / "x.parquet"
    shutil.copy(src, victim)
    mutation = data.draw(damage(victim.stat().st_size))
    apply(victim, mutation if mutation[0] != "huge_length" else ("cut", 8))
    try:
        parquet.check_schema(str(victim), COLUMNS)
        rows = list(parquet.read_pyarrow(str(victim), COLUMNS))
    except DataError as err:
        assert victim.name in str(err)
        return
    except tf.errors.OpError as err:  # pyarrow's error, raised through tf.data's generator
        assert victim.name in err.message, f"read error without the file's name: {err.message[:200]}"
        return
    expected = table("train", 0, 30, 0)
    got = {c: [np.asarray(r[c]).tolist() for r in rows] for c in COLUMNS}
    assert got == {c: np.asarray(expected[c]).tolist() for c in COLUMNS}, f"{mutation[0]}: rows differ"


def test_every_flip_in_a_parquet_footer_is_named(clicks_master, tmp_path):
    """Exhaustive over the footer (schema, types, offsets): one flipped bit at each byte ends in a
    DataError naming the file or a schema read as before, never a raw pyarrow error (a flipped type
    field once escaped as ArrowNotImplementedError)."""
    data = (clicks_master / "clicks" / "train-00000-of-00002.parquet").read_bytes()
    footer = struct.unpack("<I", data[-8:-4])[0]
    victim = tmp_path / "x.parquet"
    for at in range(len(data) - 8 - footer, len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 1
        victim.write_bytes(bytes(damaged))
        try:
            parquet.check_schema(str(victim), COLUMNS)
        except DataError as err:
            assert victim.name in str(err)


# ---- CSV -----------------------------------------------------------------------------------------
def intact_lines(text: str, mutation) -> set[int]:
    """Indexes of the data lines of ``text`` (0 = the first row after the header) that ``mutation``
    leaves byte for byte as they were."""
    kind, arg = mutation
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"][:-1]  # start of each line
    line_of = lambda at: max(i for i, s in enumerate(starts) if s <= at)  # noqa: E731
    rows = set(range(1, len(starts)))
    if kind in ("flip", "flips"):
        for at, _ in arg:
            rows -= {line_of(at)} | ({line_of(at) + 1} if text[at] == "\n" else set())
    elif kind == "cut":
        rows = {r for r in rows if starts[r] + len(text.splitlines()[r]) + 1 <= arg}
    elif kind == "empty":
        rows = set()
    return {r - 1 for r in rows}


@CASES
@given(data=st.data())
def test_csv_damage_is_named_or_read(tmp_path, data):
    """CSV has no checksums: a damaged digit can read as another number (README says so), but a
    malformed file ends in an error naming the file and line, never a crash or a hang; rows read
    from a damaged file are what its text says, and every line the damage missed is passed on
    with exactly the values written."""
    text = "id,x\n" + "".join(f"{i},{i * 0.5}\n" for i in range(30))
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "c.csv"
    path.write_text(text)
    digits = [i for i, ch in enumerate(text) if ch.isdigit()]
    changed_digits = st.lists(
        st.tuples(st.sampled_from(digits), st.integers(1, 9)).map(
            lambda d: (d[0], ord(text[d[0]]) ^ ord(str((int(text[d[0]]) + d[1]) % 10)))
        ),
        min_size=1,
        max_size=4,
    ).map(lambda changes: ("flips", changes))  # damage that still parses: a digit read as another
    mutation = data.draw(st.one_of(damage(path.stat().st_size), changed_digits))
    mutation = mutation if mutation[0] != "huge_length" else ("cut", 3)
    if mutation[0] in ("flip", "flips"):  # keep the file ASCII, so byte offsets are character offsets
        mutation = (mutation[0], [(at, xor & 0x7F or 1) for at, xor in mutation[1]])
    apply(path, mutation)
    cols = {"id": tf.int64, "x": tf.float32}
    try:
        csv.check_header(str(path), cols)
        rows = [(int(r["id"]), float(r["x"])) for r in csv.read(str(path), cols, ["id", "x"])]
    except DataError as err:
        assert path.name in str(err)
        return
    except integrity.READ_ERRORS:
        assert csv.validate(str(path), cols), "CsvDataset failed but the host check found the file fine"
        return
    damaged = path.read_text().splitlines()[1:]  # the text as it now is, parsed on the host
    assert rows == [(int(line.split(",")[0]), float(np.float32(line.split(",")[1]))) for line in damaged if line]
    passed = collections.Counter(rows)
    for i in intact_lines(text, mutation):
        assert passed[(i, i * 0.5)] >= 1, f"line {i + 2} was not damaged but its row was not passed on exactly"


# ---- JPEG folder ---------------------------------------------------------------------------------
@CASES
@given(data=st.data())
def test_jpeg_damage_never_crashes_and_is_named(tmp_path, data):
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            buf = io.BytesIO()
            Image.fromarray(np.full((16, 16, 3), 60 * i + 20, np.uint8)).save(buf, format="JPEG")
            (root / c / f"{i}.jpg").write_bytes(buf.getvalue())
    victim = root / "b" / "1.jpg"
    mutation = data.draw(damage(victim.stat().st_size))
    apply(victim, mutation if mutation[0] != "huge_length" else ("cut", 3))
    paths, labels, _ = images.list_folder(root)
    ds = images.read(paths, labels).map(lambda ex: images.decode(ex["jpeg"], 16))
    try:
        out = [x.numpy() for x in ds]
    except tf.errors.InvalidArgumentError:
        problems = {p: images.check(p) for p in paths}
        assert problems[str(victim)] and not any(v for p, v in problems.items() if p != str(victim))
        return
    assert len(out) == 4  # decodable damage (e.g. in pixel data) decodes: JPEG has no checksum
