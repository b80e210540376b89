"""Data validation with TFDV: statistics and a schema at prepare, ``make validate``, and the check
before training. Real Beam (in-memory DirectRunner), real TFDV, tiny deterministic data.

Tables: row ``g`` of every file has ``size = 1 + (g % 50) / 10``, ``color = red/green/blue[g % 3]``,
``label = g % 2``, ``row_id = g``: each file is the same mixture, so fresh files pass and each
damaged file (a new color, sizes as text, no color column, every label 1) is named with its feature.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ingest import validate, validation
from ingest.datasets.clicks import Clicks
from ingest.datasets.foreign import ForeignTFRecord
from ingest.datasets.images import ImageFolder
from ingest.datasets.shapes import Shapes
from ingest.datasets.table import Table
from ingest.options import DataOptions
from stoker.errors import DataError
from tests.training import runs

ROWS = 200  # per CSV file: four cycles of the 50 sizes (validate.MIN_DRIFT_RECORDS: compared on its own)
PER_FILE = 256  # per TFRecord file


def _row(g: int) -> dict[str, object]:
    return {"row_id": g, "size": 1 + (g % 50) / 10, "color": ("red", "green", "blue")[g % 3], "label": g % 2}


def _csv(path: Path, start: int, change=lambda row: row) -> Path:
    rows = [change(_row(g)) for g in range(start, start + ROWS)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _comparator(feature) -> str | None:
    for name in ("infinity_norm", "jensen_shannon_divergence"):
        if feature.drift_comparator.HasField(name):
            return name
    return None


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A table prepared (with its statistics and schema) from 4 CSV files."""
    root = tmp_path_factory.mktemp("table")
    (root / "sales").mkdir()
    for f in range(4):
        _csv(root / "sales" / f"part-{f}.csv", f * ROWS)
    opts = DataOptions(name="table", source=str(root / "sales"), label="label", data_dir=str(root / "data"))
    validation.prepare(Table(opts))
    return Table(DataOptions(name="sales", data_dir=str(root / "data"))), root


def test_prepare_writes_statistics_html_and_a_schema_with_drift_comparators(table):
    ds, _ = table
    for name in (validate.STATISTICS, validate.HTML, validate.SCHEMA, validation.RECORD):
        assert (ds.root / name).is_file(), name
    html = (ds.root / validate.HTML).read_text()
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html
    for feature in ("size", "color", "label", "row_id"):
        assert f"<td>{feature}</td>" in html, feature
    schema, train = validate.load(ds.root)
    comparators = {f.name: _comparator(f) for f in schema.feature}
    assert comparators["label"] == "infinity_norm" and comparators["size"] == "jensen_shannon_divergence"
    assert comparators["row_id"] is None and comparators["color"] is None  # an id is never drift-compared
    assert train.datasets[0].num_examples > 0.8 * 4 * ROWS  # the train split of the rows (10% held out)
    assert json.loads((ds.root / validation.RECORD).read_text())["mixed_files"] is True


def test_fresh_rows_from_the_same_distribution_pass(table, tmp_path):
    ds, _ = table
    (tmp_path / "new").mkdir()
    _csv(tmp_path / "new" / "a.csv", 10_000)
    _csv(tmp_path / "new" / "b.csv", 20_000)
    assert validation.check_dataset(ds, str(tmp_path / "new")) == []


def test_make_validate_names_feature_anomaly_and_file(table, tmp_path):
    """The four anomalies, each in its own file, through ``python -m ingest validate`` (make validate)."""
    ds, root = table
    new = tmp_path / "new"
    new.mkdir()
    _csv(new / "good.csv", 30_000)
    _csv(new / "purple.csv", 30_000, lambda r: dict(r, color="purple") if r["row_id"] % 3 == 0 else r)
    _csv(new / "text.csv", 30_000, lambda r: dict(r, size="big" if r["row_id"] % 2 else "small"))
    _csv(new / "nocolor.csv", 30_000, lambda r: {k: v for k, v in r.items() if k != "color"})
    _csv(new / "drift.csv", 30_000, lambda r: dict(r, label=1))
    cmd = [sys.executable, "-m", "ingest", "validate", "DATASET=sales", f"DATA_DIR={root / 'data'}", f"SOURCE={new}"]
    out = subprocess.run(cmd, env=runs.env(), cwd=runs.REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr[-3000:]
    found = {(line.split(" -> ")[0], line.split(" -> ")[2].split(":")[0]) for line in out.stdout.splitlines()}
    assert ("color", str(new / "purple.csv")) in found, out.stdout
    assert ("size", str(new / "text.csv")) in found, out.stdout
    assert ("color", str(new / "nocolor.csv")) in found, out.stdout
    assert ("label", str(new / "drift.csv")) in found, out.stdout
    assert not [f for f in found if f[1] == str(new / "good.csv")], out.stdout
    kinds = {
        (line.split(" -> ")[0], Path(line.split(" -> ")[2].split(":")[0]).name, line.split(" -> ")[1])
        for line in out.stdout.splitlines()
    }
    assert ("size", "text.csv", "numbers became text") in kinds, out.stdout
    assert ("color", "purple.csv", "Unexpected string values") in kinds, out.stdout
    assert ("color", "nocolor.csv", "Column dropped") in kinds, out.stdout
    assert [k for k in kinds if k[:2] == ("label", "drift.csv") and "Linfty" in k[2]], out.stdout


def test_class_pure_shards_are_not_label_drift_and_an_edited_schema_survives(tmp_path):
    """shapes writes example i to shard i % shards with label i % 4: class-pure shards. The record
    says so, and the dataset's own files then pass; a re-prepare keeps the user's schema."""
    opts = DataOptions(
        name="shapes", data_dir=str(tmp_path), train_examples=64, eval_examples=16, shards=4, image_size=16
    )
    ds = Shapes(opts)
    validation.prepare(ds)
    assert validation.read_record(ds.root)["mixed_files"] is False
    assert validation.check_dataset(ds) == []
    edited = (ds.root / validate.SCHEMA).read_text().replace("threshold: 0.1", "threshold: 0.3")
    (ds.root / validate.SCHEMA).write_text("# edited by hand\n" + edited)
    validation.prepare(ds)
    assert (ds.root / validate.SCHEMA).read_text() == "# edited by hand\n" + edited
    assert (ds.root / validate.STATISTICS).is_file()
    (ds.root / validate.SCHEMA).write_text(edited + "\nfeature { name: ")  # a broken edit
    with pytest.raises(DataError, match="schema.pbtxt is not a valid TFDV schema"):
        validation.check_dataset(ds)


def test_clicks_parquet_shards_are_described_from_arrow(tmp_path):
    ds = Clicks(DataOptions(name="clicks", data_dir=str(tmp_path), train_examples=800, eval_examples=200, shards=2))
    validation.prepare(ds)
    schema, _ = validate.load(ds.root)
    comparators = {f.name: _comparator(f) for f in schema.feature}
    assert comparators["f0"] == "jensen_shannon_divergence" and comparators["label"] == "infinity_norm"
    assert comparators["id"] is None and comparators["ad"] is None
    assert validation.check_dataset(ds) == []


# ---- training stops on changed data --------------------------------------------------------
def _tfrecord(path: Path, start: int, label=lambda i: i % 2) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(start, start + PER_FILE):
            x = np.array([(i % 8) / 8, ((i * 3) % 8) / 8, label(i), 0.5], np.float32)
            feature = {
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=x)),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label(i)])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_training_stops_before_step_1_on_a_drifted_file(tmp_path):
    """A user's TFRecord file replaced by one whose labels are all 1: the run re-counts SOURCE, checks
    the changed file against the kept schema and stops before step 1, naming feature and file."""
    src = tmp_path / "exported"
    src.mkdir()
    for f in range(4):
        _tfrecord(src / f"part-{f}.tfrecord", f * PER_FILE)
    data = tmp_path / "data"
    opts = DataOptions(name="tfrecord", source=f"{src}/*.tfrecord", label="label", feature="x", data_dir=str(data))
    validation.prepare(ForeignTFRecord(opts))
    assert (data / "exported" / validate.SCHEMA).is_file() and sorted(p.name for p in src.iterdir()) == [
        f"part-{f}.tfrecord" for f in range(4)
    ]  # statistics go to DATA_DIR/<name>/, never into SOURCE
    _tfrecord(src / "part-1.tfrecord", PER_FILE, label=lambda i: 1)
    items = ["DATASET=exported", f"DATA_DIR={data}", "CONFIG=tiny", "EPOCHS=1", "BATCH=32"]
    cmd = runs.command(tmp_path / "runs", "drift", items, [])
    out = subprocess.run(cmd, env=runs.env(), cwd=runs.REPO, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    assert "label -> " in text and f"-> {src / 'part-1.tfrecord'}" in text, text[-3000:]
    assert not (tmp_path / "runs" / "drift" / "metrics.json").exists()


# ---- images: the same Beam job prepares new images into a temporary folder ---------------------
def _images(folder: Path, counts: dict[str, int]) -> Path:
    from PIL import Image

    for c, (name, count) in enumerate(counts.items()):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.full((8 + i % 3, 8, 3), (40 + 160 * c, 90, 200 - 160 * c), np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i:03d}.png")
    return folder


def test_images_new_folder_is_prepared_aside_and_a_class_mix_shift_is_named(tmp_path):
    src = _images(tmp_path / "flowers", {"rose": 30, "tulip": 30})
    data = tmp_path / "data"
    validation.prepare(ImageFolder(DataOptions(name="images", source=str(src), data_dir=str(data))))
    ds = ImageFolder(DataOptions(name="flowers", data_dir=str(data)))
    html = (ds.root / validate.HTML).read_text()
    assert "<td>label</td>" in html and "<td>file</td>" in html
    schema, _ = validate.load(ds.root)
    assert not [f for f in schema.feature if f.name == "file" and f.WhichOneof("domain_info")]  # a new file is fine
    same = _images(tmp_path / "more", {"rose": 12, "tulip": 12})
    assert validation.check_dataset(ds, str(same)) == []
    skewed = _images(tmp_path / "skewed", {"rose": 20, "tulip": 2})
    found = validation.check_dataset(ds, str(skewed))
    assert [a for a in found if a.feature == "label" and a.file == "" and "Linfty" in a.kind], found
    beside = sorted(p.name for p in data.iterdir() if not p.name.endswith(".prepare.log"))
    assert beside == ["flowers"]  # nothing prepared over or beside the dataset
