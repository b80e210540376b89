"""``DATASET=tfrecord``: tf.Example files written by plain ``tf.io.TFRecordWriter``, no info file.

The files are 4 color classes as JPEG and PNG, with string labels; prepare infers the spec,
counts every record once into ``DATA_DIR/<name>/dataset_info.json`` and writes nothing into the
user's folder; training through ``python -m training`` gets above chance; each bad input's message.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ingest import datasets
from ingest.datasets import foreign
from ingest.options import DataOptions
from ingest.testing import DatasetContract
from stoker.errors import DataError
from tests.training import runs

FILES, PER_FILE, SIZE = 4, 96, 32


COLORS = ("red", "green", "blue", "gray")  # class i % 4: an image tinted by its color, with noise


def _pixels(i: int) -> tuple[np.ndarray, int]:
    label = i % 4
    rng = np.random.default_rng(i)
    tint = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [120, 120, 120]])[label]
    return np.clip(tint + rng.normal(0, 40, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8), label


def _example(i: int, *, drop: str = "") -> bytes:
    pixels, label = _pixels(i)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG" if i % 3 else "PNG")
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buf.getvalue()])),
        "class": tf.train.Feature(bytes_list=tf.train.BytesList(value=[COLORS[label].encode()])),
        "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
        "score": tf.train.Feature(float_list=tf.train.FloatList(value=[i / 10, 1.0])),
    }
    feature.pop(drop, None)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write(folder, name: str, ids, drop_at: int = -1, drop: str = "") -> None:
    with tf.io.TFRecordWriter(str(folder / name)) as writer:
        for i in ids:
            writer.write(_example(i, drop=drop if i == drop_at else ""))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported") / "exported"
    folder.mkdir()
    for f in range(FILES):
        _write(folder, f"part-{f:05d}-of-{FILES:05d}.tfrecord", range(f * PER_FILE, (f + 1) * PER_FILE))
    return folder


def _dataset(source, data_dir, **kw) -> datasets.Dataset:
    opts = dict(name="tfrecord", source=f"{source}/*.tfrecord*", label="class", feature="image/encoded")
    return datasets.get(DataOptions(data_dir=str(data_dir), **(opts | kw)))


def test_infer_spec_finds_kinds_lengths_and_images(source):
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(source / "part-00000-of-00004.tfrecord")).take(20)]
    spec = foreign.infer_spec(records)
    assert spec["image/encoded"] | {"present": 0} == {"kind": "bytes", "length": 1, "image": "jpeg,png", "present": 0}
    assert (spec["class"]["kind"], spec["class"]["image"]) == ("bytes", "")
    assert (spec["score"]["kind"], spec["score"]["length"]) == ("float", 2)
    assert (spec["id"]["kind"], spec["id"]["length"]) == ("int64", 1)


def test_prepare_counts_in_data_dir_and_holds_out_the_last_file(source, tmp_path):
    before = sorted(os.listdir(source))
    info = _dataset(source, tmp_path).prepare()
    assert sorted(os.listdir(source)) == before, "prepare wrote into the user's folder"
    assert (tmp_path / "exported" / "dataset_info.json").is_file()
    assert info["label_names"] == sorted(COLORS) and info["image"] == {"shape": [32, 32, 3], "resize": False}
    splits = {s: [os.path.basename(x["file"]) for x in v["shards"]] for s, v in info["splits"].items()}
    assert splits == {
        "train": [f"part-{f:05d}-of-00004.tfrecord" for f in range(3)],
        "validation": ["part-00003-of-00004.tfrecord"],
    }
    assert info["splits"]["train"]["num_examples"] == 3 * PER_FILE
    again = datasets.get(DataOptions(name="exported", data_dir=str(tmp_path)))  # a dataset by its name now
    assert isinstance(again, foreign.ForeignTFRecord) and again.stale() == "" and again.num_classes == 4
    batch = next(iter(again.read(tf.constant(again.files("validation")[0])).batch(6).map(again.parse)))
    assert batch["image/encoded"].shape == (6, 32, 32, 3) and batch["id"].numpy().tolist() == list(range(288, 294))
    names = [COLORS[i % 4] for i in range(288, 294)]
    assert [again.label_names[c] for c in batch["class"].numpy()] == names


def test_split_names_in_files_are_the_splits(tmp_path):
    folder = tmp_path / "named"
    folder.mkdir()
    _write(folder, "shapes-train.tfrecord", range(40))
    _write(folder, "shapes-test.tfrecord", range(40, 50))
    info = _dataset(folder, tmp_path / "data").prepare()
    assert {s: v["num_examples"] for s, v in info["splits"].items()} == {"train": 40, "test": 10, "validation": 10}


def test_bad_inputs_name_the_key_file_and_record(source, tmp_path):
    with pytest.raises(DataError, match=r"LABEL=clas is not a key of the records: did you mean 'class'"):
        _dataset(source, tmp_path, label="clas").prepare()
    with pytest.raises(DataError, match=r"FEATURE=image is not a key.*did you mean 'image/encoded'"):
        _dataset(source, tmp_path, feature="image").prepare()
    with pytest.raises(DataError, match=r"FEATURE=class is bytes"):
        _dataset(source, tmp_path, feature="class").prepare()
    with pytest.raises(DataError, match=r"LABEL=score is float"):
        _dataset(source, tmp_path, label="score").prepare()
    holes = tmp_path / "holes"
    holes.mkdir()
    _write(holes, "a.tfrecord", range(30))
    _write(holes, "b.tfrecord", range(30, 60), drop_at=41, drop="image/encoded")
    with pytest.raises(DataError, match=rf"{holes}/b.tfrecord: record 11 has no feature 'image/encoded'"):
        _dataset(holes, tmp_path).prepare()
    one = tmp_path / "one"
    one.mkdir()
    _write(one, "all.tfrecord", range(10))
    with pytest.raises(DataError, match=r"one file .* with no split in its name.*data.eval_split="):
        _dataset(one, tmp_path).prepare()
    assert _dataset(one, tmp_path, eval_split="").prepare()["splits"]["train"]["num_examples"] == 10
    with pytest.raises(DataError, match="matches no files"):
        _dataset(tmp_path / "nothing", tmp_path).prepare()
    assert not (tmp_path / "holes" / "dataset_info.json").exists()


@pytest.mark.timeout(600)
def test_trains_through_python_m_training_above_chance(source, tmp_path):
    data = tmp_path / "data"
    items = ["DATASET=tfrecord", f"SOURCE={source}/*.tfrecord", "LABEL=class", "FEATURE=image/encoded"]
    items += [f"DATA_DIR={data}", "CONFIG=tiny", "EPOCHS=3", "BATCH=32"]
    metrics = runs.train(tmp_path / "runs", "foreign", items, ["train.learning_rate=0.003"], timeout=500)
    assert metrics["steps"] == 3 * (3 * PER_FILE // 32)
    assert metrics["eval"]["examples"] == PER_FILE and metrics["eval"]["accuracy"] > 0.6, metrics["eval"]
    assert sorted(os.listdir(source)) == [f"part-{f:05d}-of-00004.tfrecord" for f in range(FILES)]
    assert json.loads((data / "exported" / "dataset_info.json").read_text())["kind"] == "tfrecord"


def test_gzip_and_mixed_image_sizes(tmp_path):
    """GZIP files are found by their bytes; images of several sizes are resized to data.image_size."""
    folder = tmp_path / "gz"
    folder.mkdir()
    for f, side in enumerate((24, 40)):
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        with tf.io.TFRecordWriter(str(folder / f"part-{f}.tfrecord.gz"), options) as writer:
            for i in range(f * 8, f * 8 + 8):
                buf = io.BytesIO()
                Image.fromarray(_pixels(i)[0][:side, :side]).save(buf, format="PNG")
                feature = {
                    "png": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buf.getvalue()])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 4])),
                }
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    ds = _dataset(folder, tmp_path / "data", label="", feature="", image_size=16)  # defaults: 'label', the one image
    info = ds.prepare()
    assert (info["compression"], info["label"], info["feature"]) == ("GZIP", "label", "png")
    assert info["image"]["resize"] and info["image"]["shape"] == [16, 16, 3] and info["num_classes"] == 4
    batch = next(iter(ds.read(tf.constant(ds.files("validation")[0])).batch(8).map(ds.parse)))
    assert batch["png"].shape == (8, 16, 16, 3) and batch["label"].numpy().tolist() == [0, 1, 2, 3] * 2


def test_a_changed_source_or_label_prepares_again(tmp_path):
    folder = tmp_path / "grows"
    folder.mkdir()
    _write(folder, "a.tfrecord", range(8))
    _write(folder, "b.tfrecord", range(8, 16))
    _dataset(folder, tmp_path / "data").prepare()
    assert _dataset(folder, tmp_path / "data").stale() == ""
    assert "prepared with LABEL=class, not id" in _dataset(folder, tmp_path / "data", label="id").stale()
    _write(folder, "c.tfrecord", range(16, 24))
    assert "changed since" in _dataset(folder, tmp_path / "data").stale()


class TestForeignContract(DatasetContract):
    """stoker's public dataset contract, on the TFRecords above once prepared."""

    dataset_class = foreign.ForeignTFRecord
    split_sizes = {"train": 3 * PER_FILE, "validation": PER_FILE}

    @pytest.fixture(scope="class")
    def data_dir(self, source, tmp_path_factory):
        return tmp_path_factory.mktemp("contract")

    @pytest.fixture(scope="class")
    def dataset(self, source, data_dir):
        dataset = _dataset(source, data_dir)
        dataset.prepare()
        return dataset
