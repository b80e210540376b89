"""In-memory synthetic tensors: value = f(index), so a test can name any missing example."""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf


def indexed(count: int, spec: Mapping[str, tf.TensorSpec], *, num_classes: int = 10) -> tf.data.Dataset:
    """``count`` examples; example ``i`` has ``id == i``, ``label == i % num_classes`` and
    every other feature filled with a value derived from ``i`` (deterministic, no files)."""

    def make(i: tf.Tensor) -> dict[str, tf.Tensor]:
        out = {"id": i, "label": i % num_classes}
        for name, s in spec.items():
            if name in out:
                continue
            base = tf.cast(i % 251, tf.float32) / 251.0
            out[name] = tf.cast(tf.fill(s.shape, base) * (255.0 if s.dtype == tf.uint8 else 1.0), s.dtype)
        return out

    return tf.data.Dataset.range(count).map(make)
