"""``synthetic``: random-looking tensors of a given shape made in memory (compute-only runs).

Example ``i`` has ``id == i`` and ``label == i % 4`` (or skewed by ``data.class_fractions`` in
the train split); the image is a constant derived from ``i``, so tests can name any missing or
repeated example.
"""

from __future__ import annotations

import tensorflow as tf

from ingest.dataset import Dataset
from ingest.sources import synthetic

SIZES = {"train": 4096, "validation": 512}


class Synthetic(Dataset):
    """In-memory tensors; no files, nothing to prepare."""

    name = "synthetic"
    format = "memory"
    batch_preprocess = True  # a cast and a scale

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        s = self.options.image_size
        return {
            "image": tf.TensorSpec([s, s, 3], tf.uint8),
            "label": tf.TensorSpec([], tf.int64),
            "id": tf.TensorSpec([], tf.int64),
        }

    @property
    def num_classes(self) -> int:
        return 4

    def num_examples(self, split: str) -> int | None:
        if split == "train" and self.options.train_examples:
            return self.options.train_examples
        if split != "train" and self.options.eval_examples:
            return self.options.eval_examples
        return SIZES.get(split, SIZES["validation"])

    def is_prepared(self) -> bool:
        return True

    def in_memory(self, split: str) -> tf.data.Dataset:
        spec = {k: v for k, v in self.element_spec.items() if k == "image"}
        fractions = self.options.class_fractions if split == "train" else ()
        return synthetic.indexed(self.num_examples(split), spec, num_classes=self.num_classes, fractions=fractions)

    def parse(self, records: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return records

    def preprocess(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return dict(example, image=tf.cast(example["image"], tf.float32) / 255.0)

    def prepare(self, runner: str = "DirectRunner", beam_args: list[str] | None = None) -> dict:
        return {"name": self.name, "splits": {s: {"num_examples": self.num_examples(s)} for s in SIZES}}
