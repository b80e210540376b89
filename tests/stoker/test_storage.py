"""``stoker.storage``: local paths stay ``pathlib.Path``; a URL is a ``Url`` over ``tf.io.gfile``.

The ``Url`` cases run on TensorFlow's in-memory filesystem (``ram://``), a real gfile filesystem
with no server; ``s3://`` itself is tested against a local S3 server in
``tests/faults/test_object_storage.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.sources import tfrecord
from stoker import files, storage
from stoker.errors import CorruptDataError


def test_local_paths_are_plain_paths(tmp_path):
    assert storage.location("data") == Path("data") and type(storage.location(tmp_path)) is type(tmp_path)
    assert not storage.is_url("data/shapes") and storage.is_url("s3://bucket/data")
    (tmp_path / "b.txt").write_text("xy")
    (tmp_path / "a.txt").write_text("x")
    assert storage.glob(str(tmp_path / "*.txt")) == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert storage.size(tmp_path / "b.txt") == 2


def test_url_path_arithmetic():
    url = storage.location("gs://bucket/data/")
    assert isinstance(url, storage.Url) and str(url) == "gs://bucket/data"
    assert str(url / "shapes" / "dataset_info.json") == "gs://bucket/data/shapes/dataset_info.json"
    assert (url / "shapes").name == "shapes" and str((url / "shapes").parent) == "gs://bucket/data"
    assert str((url / "shapes").with_name("shapes.partial")) == "gs://bucket/data/shapes.partial"
    with pytest.raises(TypeError):
        open(url)  # noqa: SIM115  (a Url is not os.PathLike: no local folder named "gs:")


def test_url_reads_writes_lists_and_deletes_through_gfile():
    root = storage.location("ram://stoker-test-storage/data")
    (root / "shapes").mkdir()
    files.atomic_write(root / "shapes" / "dataset_info.json", json.dumps({"a": 1}))
    count, size = tfrecord.write(str(root / "shapes" / "train-00000-of-00001.tfrecord"), [b"x", b"yz"])
    assert count == 2 and size == storage.size(str(root / "shapes" / "train-00000-of-00001.tfrecord"))
    assert json.loads((root / "shapes" / "dataset_info.json").read_text()) == {"a": 1}
    assert [u.name for u in (root / "shapes").glob("train-*")] == ["train-00000-of-00001.tfrecord"]
    assert storage.glob(str(root / "shapes" / "*.json")) == [str(root / "shapes" / "dataset_info.json")]
    assert list(tfrecord.iter_records(str(root / "shapes" / "train-00000-of-00001.tfrecord"))) == [b"x", b"yz"]
    assert tfrecord.check_framing(str(root / "shapes" / "train-00000-of-00001.tfrecord")) == ""
    (root / "shapes" / "dataset_info.json").unlink()
    assert not (root / "shapes" / "dataset_info.json").exists()
    (root / "shapes" / "dataset_info.json").unlink(missing_ok=True)
    root.rmtree()
    assert not (root / "shapes" / "train-00000-of-00001.tfrecord").exists()


def test_gzip_shards_round_trip_through_gfile():
    path = "ram://stoker-test-storage/gz/train-00000-of-00001.tfrecord.gz"
    tfrecord.write(path, [b"a" * 100, b"b"], "GZIP")
    assert list(tfrecord.iter_records(path, "GZIP")) == [b"a" * 100, b"b"]
    assert [r.numpy() for r in tfrecord.read(path, "GZIP")] == [b"a" * 100, b"b"]


def test_dataset_info_on_a_url_is_reread_when_the_file_changes():
    from ingest.dataset import INFO_FILE, Dataset
    from ingest.options import DataOptions

    class Named(Dataset):
        name = "named"

    ds = Named(DataOptions(name="named", data_dir="ram://stoker-test-storage/info"))
    assert ds.info == {} and not ds.is_prepared()
    files.atomic_write(ds.root / INFO_FILE, json.dumps({"label_names": ["a", "b"]}))
    assert ds.info == {"label_names": ["a", "b"]} and ds.num_classes == 2
    ds.info["label_names"].append("mutated")  # a caller's change does not reach the kept copy
    assert ds.num_classes == 2
    # ram:// appends on "wb" where other filesystems replace, and reports mtime 0: remove first,
    # and change the size so the kept copy is known stale.
    (ds.root / INFO_FILE).unlink()
    assert ds.info == {}
    files.atomic_write(ds.root / INFO_FILE, json.dumps({"label_names": ["a", "b", "c"]}))
    assert ds.num_classes == 3
    (ds.root / INFO_FILE).unlink()
    files.atomic_write(ds.root / INFO_FILE, "{broken")
    with pytest.raises(CorruptDataError, match="dataset_info.json: not valid JSON"):
        ds.info  # noqa: B018


def test_s3_endpoint_from_the_standard_variables(monkeypatch):
    for key in ("S3_ENDPOINT", "S3_USE_HTTPS", "S3_VERIFY_SSL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # port 9 (discard) refuses here
    storage._endpoint_from_standard_variables()
    assert storage.os.environ["S3_ENDPOINT"] == "http://127.0.0.1:9"
    assert storage.os.environ["S3_USE_HTTPS"] == "0" and storage.os.environ["S3_VERIFY_SSL"] == "0"
    problem = storage._endpoint_problem()
    assert "http://127.0.0.1:9" in problem and "does not answer" in problem
    monkeypatch.setenv("S3_ENDPOINT", "https://s3.example.test")
    monkeypatch.setenv("S3_USE_HTTPS", "1")
    storage._endpoint_from_standard_variables()  # an explicit S3_ENDPOINT and S3_USE_HTTPS win
    assert storage.os.environ["S3_ENDPOINT"] == "https://s3.example.test" and storage.os.environ["S3_USE_HTTPS"] == "1"
