"""Tiny datasets with a bottleneck planted in one stage, for the profiler tests.

``Planted`` writes four small TFRecord files (record ``i`` is the text of ``i``); its image
is a constant made from the id, so parsing is almost free unless ``slow`` names the stage
that sleeps ``delay`` seconds per example (through ``tf.py_function``: a sleep costs the
same on an idle and on a loaded machine). ``HeavyShapes`` is ``shapes`` with a costly
augmentation made of real image math.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar

import tensorflow as tf

from ingest.dataset import INFO_FILE, Dataset
from ingest.datasets.shapes import Shapes

SIZE = 16  # image side
FILES, PER_FILE = 4, 64


def sleep_per_example(x: tf.Tensor, seconds: float, examples: tf.Tensor | int = 1) -> tf.Tensor:
    """``x`` unchanged, after sleeping ``seconds`` x ``examples`` on the host."""

    def wait(v: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
        time.sleep(seconds * int(n))
        return v

    y = tf.py_function(wait, [x, examples], x.dtype)
    y.set_shape(x.shape)
    return y


class Planted(Dataset):
    """Ids in TFRecord files; the stage named by ``slow`` sleeps ``delay`` s per example."""

    name = "planted"
    has_augment = True
    slow: ClassVar[str] = ""  # read | parse | augment | ''
    delay: ClassVar[float] = 0.01

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        return {
            "image": tf.TensorSpec([SIZE, SIZE, 3], tf.uint8),
            "label": tf.TensorSpec([], tf.int64),
            "id": tf.TensorSpec([], tf.int64),
        }

    @property
    def num_classes(self) -> int:
        return 4

    def read(self, path: tf.Tensor) -> tf.data.Dataset:
        ds = tf.data.TFRecordDataset(path)
        return ds.map(lambda r: sleep_per_example(r, self.delay)) if self.slow == "read" else ds

    def parse(self, records: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.slow == "parse":
            records = sleep_per_example(records, self.delay, tf.size(records))
        ids = tf.strings.to_number(records, tf.int64)
        pixel = tf.cast(tf.reshape(ids % 251, [-1, 1, 1, 1]), tf.uint8)
        return {"image": tf.broadcast_to(pixel, [tf.size(ids), SIZE, SIZE, 3]), "label": ids % 4, "id": ids}

    def augment(self, example: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.slow == "augment":
            return dict(example, image=sleep_per_example(example["image"], self.delay))
        return example

    def preprocess(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return dict(example, image=tf.cast(example["image"], tf.float32) / 255.0)

    def prepare(self, runner: str = "DirectRunner", beam_args: list[str] | None = None) -> dict:
        self.root.mkdir(parents=True, exist_ok=True)
        for f in range(FILES):
            with tf.io.TFRecordWriter(str(self.root / f"train-{f:05d}-of-{FILES:05d}.tfrecord")) as w:
                for i in range(f * PER_FILE, (f + 1) * PER_FILE):
                    w.write(str(i).encode())
        info = {"name": self.name, "splits": {"train": {"num_examples": FILES * PER_FILE}}}
        (self.root / INFO_FILE).write_text(json.dumps(info))
        return info


def planted(stage: str, delay: float = 0.01) -> type[Planted]:
    """A ``Planted`` class whose ``stage`` is slow."""
    return type(f"Planted_{stage}", (Planted,), {"slow": stage, "delay": delay})


class HeavyShapes(Shapes):
    """``shapes`` (its prepared files) with an expensive augmentation: repeated resizes and blurs."""

    name = "shapes_heavy"

    @property
    def root(self) -> Path:
        return Path(self.options.data_dir) / "shapes"

    def augment(self, example: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
        image = tf.cast(example["image"], tf.float32)
        size = image.shape[0]
        for _ in range(2):
            image = tf.image.resize(image, [8 * size, 8 * size], method="bicubic")
            image = tf.nn.avg_pool2d(image[None], 3, 1, "SAME")[0]
            image = tf.image.resize(image, [size, size], method="area")
        image = tf.image.stateless_random_flip_left_right(image, seed=seed)
        return dict(example, image=tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8))
