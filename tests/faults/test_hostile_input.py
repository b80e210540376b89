"""Randomly corrupted files end in a stoker error naming the file, or in exact values.

Never a crash of the interpreter, a hang (pytest-timeout bounds each test), or wrong values
passed on silently. Hypothesis draws a fixed number of cases (derandomized) so CI time is
bounded. Each case damages a fresh copy of small files written by stoker's own writers.
"""

from __future__ import annotations

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
    try:
        rows, _ = _read_all(ds, "train", PipelineOptions())
    except DataError as err:
        assert "train-00001-of-00002.parquet" in str(err)
        return
    expected = table("train", 30, 30, 0)
    assert sorted(r["id"] for r in rows) == list(range(60))
    assert all(r["label"] == expected["label"][r["id"] - 30] for r in rows if r["id"] >= 30)


@CASES
@given(data=st.data())
def test_parquet_without_checksums_never_crashes(clicks_master, tmp_path, data):
    """A Parquet file someone else wrote (no dataset_info): a named error or rows, no crash or hang."""
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
    assert len(rows) <= 30


# ---- CSV -----------------------------------------------------------------------------------------
@CASES
@given(data=st.data())
def test_csv_damage_is_named_or_read(tmp_path, data):
    """CSV has no checksums: a damaged digit can read as another number (README says so), but a
    malformed file ends in an error naming the file and line, never a crash or a hang."""
    text = "id,x\n" + "".join(f"{i},{i * 0.5}\n" for i in range(30))
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "c.csv"
    path.write_text(text)
    mutation = data.draw(damage(path.stat().st_size))
    apply(path, mutation if mutation[0] != "huge_length" else ("cut", 3))
    cols = {"id": tf.int64, "x": tf.float32}
    try:
        csv.check_header(str(path), cols)
        rows = list(csv.read(str(path), cols, ["id", "x"]))
    except DataError as err:
        assert path.name in str(err)
        return
    except integrity.READ_ERRORS:
        assert csv.validate(str(path), cols), "CsvDataset failed but the host check found the file fine"
        return
    assert len(rows) <= 31
    if mutation[0] == "cut" or not csv.validate(str(path), cols) and path.read_text() == text:
        return
    if path.read_text() == text:
        assert [(int(r["id"]), float(r["x"])) for r in rows] == [(i, i * 0.5) for i in range(30)]


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
