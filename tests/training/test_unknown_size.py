"""A dataset that records no sizes (a plug-in with no ``dataset_info.json``) trains one pass per epoch.

Its split is counted once (records only) instead of the old guess of ``batch_size * 100``
examples per epoch: every example id is trained on exactly once in each epoch, under the input
position (counts per file) and under TensorFlow's iterator (``pipeline.iterator_checkpoint``).
"""

from __future__ import annotations

from collections import Counter

import pytest
import tensorflow as tf

from ingest import datasets
from ingest import runconfig as run_config
from ingest.dataset import Dataset
from ingest.options import DataOptions
from ingest.sources import tfrecord
from tests.training.runs import id_lines
from training import controller

FILES, PER_FILE, BATCH = 3, 40, 24  # 120 examples: 5 steps per epoch (the old guess was 2400 examples)
_SPEC = {"x": tf.io.FixedLenFeature([4], tf.float32), "label": tf.io.FixedLenFeature([], tf.int64)}
_SPEC["id"] = tf.io.FixedLenFeature([], tf.int64)


def _example(i: int) -> bytes:
    label = i % 2
    feature = {
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[label * 2.0 - 1.0, i % 3, 0.5, -0.5])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class Unsized(Dataset):
    """Like a minimal plug-in: its own files, a parse, no sizes anywhere."""

    name = "unsized"
    feature_key = "x"
    default_model = "clicks_mlp"
    num_classes = 2

    @property
    def element_spec(self):
        return {
            "x": tf.TensorSpec([4], tf.float32),
            "label": tf.TensorSpec([], tf.int64),
            "id": tf.TensorSpec([], tf.int64),
        }

    def is_prepared(self) -> bool:
        return True

    def parse(self, records):
        return tf.io.parse_example(records, _SPEC)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("unsized")
    (root / "unsized").mkdir()
    for f in range(FILES):
        ids = range(f * PER_FILE, (f + 1) * PER_FILE)
        tfrecord.write(root / "unsized" / f"train-{f:05d}-of-{FILES:05d}.tfrecord", [_example(i) for i in ids])
    return root


@pytest.mark.parametrize("iterator", [False, True], ids=["position", "iterator"])
def test_each_epoch_is_one_pass(data_dir, tmp_path, iterator):
    dataset = Unsized(DataOptions(name="unsized", data_dir=str(data_dir)))
    assert dataset.num_examples("train") is None and dataset.count_examples("train") == FILES * PER_FILE
    sets = f"data.data_dir={data_dir} data.eval_split= train.runs_dir={tmp_path} train.record_ids=true"
    sets += f" pipeline.iterator_checkpoint={str(iterator).lower()}"
    config = run_config.from_args(
        ["DATASET=unsized", "STRATEGY=one_device", "EPOCHS=3", f"BATCH={BATCH}", "RUN=unsized"], [sets]
    )
    with datasets.REGISTRY.temporary("unsized", Unsized):
        metrics = controller.run(config)
    steps_per_epoch = FILES * PER_FILE // BATCH
    assert metrics["steps"] == 3 * steps_per_epoch
    lines = id_lines(tmp_path / "unsized" / "ids" / "worker_0.txt")
    for epoch in range(3):
        seen = Counter(
            i for step, ids in lines if epoch * steps_per_epoch < step <= (epoch + 1) * steps_per_epoch for i in ids
        )
        assert seen == Counter(range(FILES * PER_FILE)), f"epoch {epoch}: not each id once"
