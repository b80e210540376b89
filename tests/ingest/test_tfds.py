"""``DATASET=tfds:NAME``: a dataset built by tensorflow-datasets in the test (a GeneratorBasedBuilder,
``download_and_prepare`` into a temporary folder, nothing downloaded) trains through ``python -m training``."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ingest import datasets
from ingest.datasets.tfds_prepared import TfdsDataset, parse_name
from ingest.options import DataOptions
from ingest.testing import DatasetContract
from stoker.errors import DataError
from tests.training import runs

COLORS = ("red", "green", "blue", "gray")
SIZES = {"train": 256, "validation": 64}


def _image(i: int) -> np.ndarray:
    tint = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [120, 120, 120]])[i % 4]
    return np.clip(tint + np.random.default_rng(i).normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)


class StokerTestColors(tfds.core.GeneratorBasedBuilder):
    """Four color classes, 32 px; example ``i`` has id ``i`` and label ``i % 4``."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(32, 32, 3)),
            "label": tfds.features.ClassLabel(names=list(COLORS)),
            "id": tf.int64,
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 256), "validation": self._generate_examples(256, 320)}

    def _generate_examples(self, start, stop):
        for i in range(start, stop):
            yield i, {"image": _image(i), "label": i % 4, "id": i}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    StokerTestColors(data_dir=str(root)).download_and_prepare()
    return root


def test_reads_splits_features_and_sizes_from_tfds_metadata(tfds_dir, monkeypatch):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    ds = datasets.get(DataOptions(name="tfds:stoker_test_colors", data_dir=str(tfds_dir)))
    assert isinstance(ds, TfdsDataset) and ds.root == tfds_dir / "stoker_test_colors" / "1.0.0"
    assert {s: ds.num_examples(s) for s in SIZES} == SIZES and ds.label_names == COLORS
    assert (ds.feature_key, ds.label_key, ds.default_model) == ("image", "label", "shapes_cnn")
    assert sum(ds.expected_records(f) for f in ds.files("train")) == 256
    batch = next(iter(ds.read(tf.constant(ds.files("validation")[0])).batch(8).map(ds.parse)))
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == tf.uint8
    for i, label, image in zip(batch["id"].numpy(), batch["label"].numpy(), batch["image"].numpy(), strict=True):
        assert 256 <= i < 320 and label == i % 4 and np.abs(image.astype(int) - _image(i)).max() == 0  # PNG: lossless
    assert ds.prepare()["splits"]["train"]["num_examples"] == 256  # prepared: nothing to do
    ids = np.concatenate([b["id"].numpy() for b in ds.read(tf.constant(ds.files("train")[0])).batch(64).map(ds.parse)])
    np.testing.assert_array_equal(ds.labels("train"), ids % 4)  # labels read alone, in file order
    assert datasets.names(str(tfds_dir))["tfds:stoker_test_colors"] == "prepared by TFDS"  # make datasets lists it


def test_not_prepared_names_the_path_searched_and_the_command(tfds_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(
        DataError, match=rf"tfds:mnist: no dataset prepared .* at {tmp_path}/mnist.*searched TFDS_DATA_DIR"
    ):
        datasets.get(DataOptions(name="tfds:mnist")).prepare()
    with pytest.raises(DataError, match=r"`tfds build mnist --data_dir="):
        datasets.get(DataOptions(name="tfds:mnist")).files("train")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
    with pytest.raises(DataError, match=r"versions prepared there: 1.0.0"):
        datasets.get(DataOptions(name="tfds:stoker_test_colors:2.0.0")).prepare()
    assert parse_name("tfds:mnist/cfg:3.0.1") == ("mnist", "cfg", "3.0.1")
    with pytest.raises(DataError, match="expected tfds:NAME"):
        parse_name("tfds:mn ist")


@pytest.mark.timeout(600)
def test_trains_through_python_m_training(tfds_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))  # the subprocess finds it there, not in DATA_DIR
    items = ["DATASET=tfds:stoker_test_colors", f"DATA_DIR={tmp_path / 'empty'}", "CONFIG=tiny", "EPOCHS=2"]
    metrics = runs.train(tmp_path / "runs", "tfds", items, ["train.record_ids=true"], timeout=500)
    assert metrics["steps"] == 2 * 256 // 32 and metrics["eval"]["examples"] == 64
    assert metrics["eval"]["accuracy"] > 0.6, metrics["eval"]
    assert runs.ids_seen(tmp_path / "runs" / "tfds") == {i: 2 for i in range(256)}
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


class TestTfdsContract(DatasetContract):
    """stoker's public dataset contract, on the TFDS-built folder."""

    dataset_class = TfdsDataset
    split_sizes = SIZES

    @pytest.fixture(scope="class")
    def data_dir(self, tfds_dir):
        return str(tfds_dir)

    @pytest.fixture(scope="class")
    def dataset(self, data_dir):
        return TfdsDataset(DataOptions(name="tfds:stoker_test_colors", data_dir=data_dir))
