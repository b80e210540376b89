"""``rings``: 2-D points labelled by which of two rings they fall in (a complete plug-in example)."""

import json

import numpy as np
import tensorflow as tf

from ingest.dataset import INFO_FILE, Dataset
from ingest.sources import tfrecord

FEATURES = {
    "x": tf.io.FixedLenFeature([2], tf.float32),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "id": tf.io.FixedLenFeature([], tf.int64),
}
SIZES = {"train": 2048, "validation": 256}


def _example(i: int, rng: np.random.Generator) -> bytes:
    label = i % 2
    angle, radius = rng.uniform(0, 2 * np.pi), (1.0 if label else 2.0) + rng.normal(0, 0.1)
    point = [radius * np.cos(angle), radius * np.sin(angle)]
    feature = {
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=point)),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class Rings(Dataset):
    """Points on two noisy rings; TFRecord shards written by prepare()."""

    name = "rings"
    feature_key = "x"

    @property
    def element_spec(self):
        return {
            "x": tf.TensorSpec([2], tf.float32),
            "label": tf.TensorSpec([], tf.int64),
            "id": tf.TensorSpec([], tf.int64),
        }

    @property
    def num_classes(self):
        return 2

    def parse(self, records):
        """A batch of serialized Examples at once (vectorized)."""
        return tf.io.parse_example(records, FEATURES)

    def prepare(self, runner="DirectRunner", beam_args=None):
        """Small enough to write from one process; stoker's size checks use dataset_info.json."""
        self.root.mkdir(parents=True, exist_ok=True)
        info = {"name": self.name, "label_names": ["outer", "inner"], "splits": {}}
        for split, n in SIZES.items():
            rng = np.random.default_rng(len(split))
            name = f"{split}-00000-of-00002.tfrecord"
            half = [range(0, n, 2), range(1, n, 2)]
            shards = []
            for k, ids in enumerate(half):
                name = f"{split}-{k:05d}-of-00002.tfrecord"
                count, size = tfrecord.write(self.root / name, [_example(i, rng) for i in ids])
                shards.append({"file": name, "num_examples": count, "bytes": size})
            info["splits"][split] = {"num_examples": n, "shards": shards}
        (self.root / INFO_FILE).write_text(json.dumps(info, indent=2))
        return info
