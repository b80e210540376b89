"""Every bad input gets one clear error naming the file, key or value, and loses nothing."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from ingest import datasets, integrity, pipeline
from ingest import runconfig as run_config
from ingest.datasets.clicks import Clicks
from ingest.options import DataOptions, PipelineOptions
from ingest.testing import Indexed, indexed_record, write_indexed
from stoker.config import ConfigError
from stoker.errors import CorruptDataError, DataError
from stoker.registry import RegistryError
from training import models


@pytest.fixture()
def shapes_copy(shapes_dir, tmp_path):
    shutil.copytree(os.path.join(shapes_dir, "shapes"), tmp_path / "shapes")
    return tmp_path


def _shapes(root, **kw):
    return datasets.get(DataOptions(name="shapes", data_dir=str(root), **kw))


def _iterate(ds, options=None, split="train"):
    built = pipeline.build(ds, split, options or PipelineOptions(), batch_size=16, training=False, repeat=False)
    try:
        return sum(int(b["label"].shape[0]) for b in built.dataset), built
    except tf.errors.DataLossError as err:
        raise integrity.explain(err, ds, built.files) from None


def _snapshot(root):
    return {p: os.path.getsize(os.path.join(d, p)) for d, _, fs in os.walk(root) for p in fs}


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match=r"DATA_DIR .*nowhere.* does not exist.*make prepare"):
        _shapes(tmp_path / "nowhere").files("train")


def test_pattern_that_matches_no_files(tmp_path):
    with pytest.raises(DataError, match=r"no files match .*shapes/train-\*\.tfrecord.*make prepare DATASET=shapes"):
        _shapes(tmp_path).files("train")


def _damage(path, at, cut=False):
    data = bytearray(Path(path).read_bytes())
    if cut:
        data = data[:at]
    else:
        data[at] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def test_crc_mismatch_names_the_file(shapes_copy):
    path = str(shapes_copy / "shapes" / "train-00002-of-00004.tfrecord")
    _damage(path, 500)  # inside the first record's data
    os.utime(path)
    size_ok = os.path.getsize(path)
    before = _snapshot(shapes_copy)
    with pytest.raises(
        CorruptDataError, match=r"train-00002-of-00004\.tfrecord is corrupt .*CRC mismatch.*skip_corrupt"
    ):
        _iterate(_shapes(shapes_copy))
    assert _snapshot(shapes_copy) == before and os.path.getsize(path) == size_ok


@pytest.mark.parametrize("where", ["inside a record", "inside a header", "empty shard"])
def test_truncated_tfrecord_names_the_file(shapes_copy, where):
    path = str(shapes_copy / "shapes" / "train-00001-of-00004.tfrecord")
    size = os.path.getsize(path)
    _damage(path, {"inside a record": size // 2, "inside a header": size - 4 - 5000, "empty shard": 0}[where], cut=True)
    # the size recorded in dataset_info.json catches even the cuts tf.data reads without error
    with pytest.raises(CorruptDataError, match=r"train-00001-of-00004\.tfrecord is \d+ bytes but was written as"):
        _iterate(_shapes(shapes_copy))


def test_trailing_garbage_is_caught(shapes_copy):
    path = shapes_copy / "shapes" / "train-00000-of-00004.tfrecord"
    with open(path, "ab") as f:
        f.write(b"garbage")
    with pytest.raises(CorruptDataError, match="train-00000-of-00004.tfrecord is"):
        _shapes(shapes_copy).files("train")


def test_skip_corrupt_skips_counts_and_bounds(shapes_copy):
    root = shapes_copy / "shapes"
    info = (root / "dataset_info.json").read_text()
    shards = {p.name: p for p in root.glob("train-*.tfrecord")}
    _damage(str(shards["train-00002-of-00004.tfrecord"]), 500)  # one record's data CRC
    size = os.path.getsize(shards["train-00003-of-00004.tfrecord"])
    ds = _shapes(shapes_copy)
    n, built = _iterate(ds, PipelineOptions(skip_corrupt=True, max_corrupt=5))
    assert n == 256 - 1
    assert built.corrupt.as_dict() == {"skipped_records": 1, "files": {str(shards["train-00002-of-00004.tfrecord"]): 1}}
    # a cut shard (size check) is not skippable silently: it is reported by name
    _damage(str(shards["train-00003-of-00004.tfrecord"]), size // 2, cut=True)
    with pytest.raises(CorruptDataError, match="train-00003"):
        _iterate(ds, PipelineOptions(skip_corrupt=True, max_corrupt=5))
    assert (root / "dataset_info.json").read_text() == info


def test_skip_corrupt_bound(shapes_copy):
    root = shapes_copy / "shapes"
    for name in ("train-00000-of-00004.tfrecord", "train-00001-of-00004.tfrecord"):
        _damage(str(root / name), 500)
    with pytest.raises(CorruptDataError, match=r"2 corrupt records \(more than pipeline.max_corrupt=1\)"):
        _iterate(_shapes(shapes_copy), PipelineOptions(skip_corrupt=True, max_corrupt=1))


def _clicks_file(tmp_path, **columns):
    root = tmp_path / "clicks"
    root.mkdir()
    pq.write_table(pa.table(columns), root / "train-00000-of-00001.parquet")
    return Clicks(DataOptions(name="clicks", data_dir=str(tmp_path)))


def test_parquet_missing_column(tmp_path):
    ds = _clicks_file(tmp_path, f0=np.zeros(3, np.float32))
    with pytest.raises(DataError, match=r"train-00000-of-00001\.parquet: column 'f1' is missing"):
        ds.files("train")


def test_parquet_column_of_wrong_type(tmp_path):
    cols = {f"f{i}": np.zeros(3, np.float32) for i in range(8)}
    cols.update(ad=np.zeros(3, np.int64), label=np.array(["a", "b", "c"]), id=np.arange(3))
    ds = _clicks_file(tmp_path, **cols)
    with pytest.raises(DataError, match=r"column 'label' has type string, expected int64"):
        ds.files("train")


def test_unknown_dataset_model_and_preset_names():
    with pytest.raises(RegistryError, match=r"unknown dataset 'shapez': did you mean 'shapes'"):
        datasets.get(DataOptions(name="shapez"))
    with pytest.raises(RegistryError, match=r"unknown model 'shapes_cn'.*'shapes_cnn'"):
        models.build("shapes_cn", (8, 8, 3), 2)
    with pytest.raises(ConfigError, match=r"config preset .*defualt.yaml.* does not exist \(did you mean default\?\)"):
        run_config.from_args(["CONFIG=defualt"])
    with pytest.raises(ConfigError, match=r"pipeline.preset='fast' is not one of 'naive', 'optimized', 'dali'"):
        run_config.from_args(["PIPELINE=fast"])
    with pytest.raises(ConfigError, match=r"unknown strategy 'mirored' \(did you mean mirrored\?\)"):
        run_config.from_args(["STRATEGY=mirored"])


@pytest.mark.parametrize("value", ["0", "-8"])
def test_non_positive_batch_size(value):
    with pytest.raises(ConfigError, match=rf"train.batch_size={value} must be >= 1"):
        run_config.from_args([f"BATCH={value}"])


def test_shuffle_buffer_that_cannot_fit_in_memory(shapes_dir):
    ds = _shapes(shapes_dir)
    with pytest.raises(
        DataError, match=r"data.shuffle_buffer=1000000000 holds about .* GiB.*lower data.shuffle_buffer"
    ):
        pipeline.build(ds, "train", PipelineOptions(), batch_size=8, training=True, shuffle_buffer=10**9)


def test_cli_reports_one_line_and_exit_code_2(shapes_copy):
    path = str(shapes_copy / "shapes" / "train-00002-of-00004.tfrecord")
    _damage(path, 700)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "CONFIG=tiny",
            f"DATA_DIR={shapes_copy}",
            "STRATEGY=one_device",
            "EPOCHS=1",
            "RUN=bad",
            "--set",
            f"train.runs_dir={shapes_copy}/runs data.shuffle_buffer=64",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "train-00002-of-00004.tfrecord is corrupt" in out.stdout and "Traceback" not in out.stdout + out.stderr


def test_framing_break_without_counts_reports_the_unreadable_bytes(tmp_path, caplog):
    # No dataset_info.json: nobody knows how many records follow a broken length, so the report
    # says how many bytes could not be framed instead of only "1 skipped record".
    paths = write_indexed(tmp_path / "indexed", "train", files=2, per_file=10)
    record = 12 + len(indexed_record(0)) + 4
    size = os.path.getsize(paths[1])
    _damage(paths[1], 3 * record + 9)  # record 3's length CRC: records 3..9 cannot be framed
    ds = Indexed(DataOptions(name="indexed", data_dir=str(tmp_path)))
    built = pipeline.build(ds, "train", PipelineOptions(skip_corrupt=True), batch_size=1, training=False, repeat=False)
    with caplog.at_level("WARNING"):
        ids = sorted(int(b["id"][0]) for b in built.dataset)
    assert ids == list(range(10)) + [10, 11, 12]
    assert built.corrupt.as_dict() == {
        "skipped_records": 1,
        "files": {paths[1]: 1},
        "unreadable_bytes": {paths[1]: size - 3 * record},
    }
    assert f"the last {size - 3 * record:,} bytes" in caplog.text and "may hold more records" in caplog.text


def test_empty_shard_without_counts_is_named(tmp_path, caplog):
    paths = write_indexed(tmp_path / "indexed", "train", files=2, per_file=10)
    Path(paths[0]).write_bytes(b"")
    with caplog.at_level("WARNING"):
        files = Indexed(DataOptions(name="indexed", data_dir=str(tmp_path))).files("train")
    assert files == paths
    assert f"{paths[0]} is empty and no record count was written" in caplog.text
