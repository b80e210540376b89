"""PIPELINE=dali: the CPU DALI pipeline through DALIDataset against the tf.data path on the same files."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import tensorflow as tf

from ingest import dali, datasets, pipeline
from ingest.options import DataOptions, PipelineOptions
from stoker.errors import DataError

# Only the tests that run DALI need it; the others (the missing-extra message, index files,
# shard sizes) run without it. CI installs the extra, so a skip there fails (tests/conftest.py).
needs_dali = pytest.mark.skipif(
    importlib.util.find_spec("nvidia.dali") is None, reason='NVIDIA DALI not installed (pip install -e ".[dali]")'
)
BATCH = 16
EVAL_BATCH = 24  # 64 validation examples: two full batches and one DALI pads with 8 repeats


@pytest.fixture(scope="module")
def shapes(shapes_dir):
    return datasets.get(DataOptions(name="shapes", data_dir=shapes_dir, image_size=32))


def _by_id(ds: tf.data.Dataset, key: str = "image") -> dict[int, np.ndarray]:
    return {int(i): v for b in ds for i, v in zip(b["id"].numpy(), b[key].numpy(), strict=True)}


def _dali(shapes, split: str, **kw) -> pipeline.Built:
    args = dict(batch_size=BATCH, training=False, seed=0, shuffle_buffer=0, repeat=False) | kw
    return pipeline.build(shapes, split, PipelineOptions(preset="dali", map_parallelism=2), None, **args)


@needs_dali
@pytest.mark.timeout(120)
def test_evaluation_matches_the_tf_data_path(shapes):
    ref = pipeline.build(
        shapes,
        "validation",
        PipelineOptions(preset="optimized"),
        None,
        batch_size=EVAL_BATCH,
        training=False,
        repeat=False,
    )
    got = _dali(shapes, "validation", batch_size=EVAL_BATCH)
    assert got.dataset.element_spec == ref.dataset.element_spec
    want, have = _by_id(ref.dataset), _by_id(got.dataset)
    ids = [int(i) for b in got.dataset for i in b["id"]]
    assert sorted(ids) == sorted(want) == list(range(64))  # every example once, padding dropped
    labels = _by_id(got.dataset, "label")
    assert all(int(labels[i]) == i % 4 for i in labels)
    diff = np.stack([np.abs(have[i] - want[i]) for i in want])
    # Same normalization; the JPEG decoders differ by a few pixel levels (1 level = 1/(255 std) ~ 0.016).
    assert diff.mean() < 0.03 and diff.max() < 0.2, (diff.mean(), diff.max())
    lo, hi = min(v.min() for v in want.values()), max(v.max() for v in want.values())
    assert all(lo - 0.2 <= v.min() and v.max() <= hi + 0.2 for v in have.values())


@needs_dali
@pytest.mark.timeout(120)
def test_training_batches_have_the_training_format(shapes):
    got = _dali(shapes, "train", training=True, shuffle_buffer=256, repeat=True)
    spec = got.dataset.element_spec
    assert spec["image"] == tf.TensorSpec([BATCH, 32, 32, 3], tf.float32)
    assert spec["label"] == tf.TensorSpec([BATCH], tf.int64) and spec["id"] == tf.TensorSpec([BATCH], tf.int64)
    ids = [int(i) for b in got.dataset.take(256 // BATCH) for i in b["id"]]
    assert set(ids) <= set(range(256)) and len(set(ids)) > 200  # one epoch's worth, shuffled reads


@needs_dali
@pytest.mark.timeout(120)
def test_iterator_checkpoint_resumes_exactly(shapes, tmp_path):
    def batches(it, n):
        return [next(it)["id"].numpy().tolist() for _ in range(n)]

    it = iter(_dali(shapes, "train", training=True, shuffle_buffer=64, repeat=True).dataset)
    batches(it, 3)
    path = tf.train.Checkpoint(iterator=it).save(str(tmp_path / "ckpt"))
    want = batches(it, 3)
    again = iter(_dali(shapes, "train", training=True, shuffle_buffer=64, repeat=True).dataset)
    tf.train.Checkpoint(iterator=again).restore(path)
    assert batches(again, 3) == want


@needs_dali
@pytest.mark.timeout(120)
def test_python_bridge_without_the_plugin(shapes, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali.plugin.tf", None)  # the plugin import now fails
    got = _dali(shapes, "validation")
    assert sorted(_by_id(got.dataset)) == list(range(64))


def test_index_counts_match_dataset_info(shapes, tmp_path):
    for shard in shapes.info["splits"]["train"]["shards"]:
        n = dali.write_index(shapes.root / shard["file"], tmp_path / "x.idx")
        assert n == shard["num_examples"]


def test_missing_dali_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    with pytest.raises(DataError, match=r"pip install -e \"\.\[dali\]\""):
        dali._require_dali()


@needs_dali
def test_dali_refuses_the_data_service(shapes):
    opts = PipelineOptions(preset="dali", data_service="grpc://127.0.0.1:5050")
    with pytest.raises(DataError, match="DATA_SERVICE"):
        pipeline.build(shapes, "train", opts, None, batch_size=8, training=True, seed=0, shuffle_buffer=8, repeat=True)


def test_shard_sizes_cover_the_split():
    assert sum(dali._shard_size(10, i, 3) for i in range(3)) == 10
