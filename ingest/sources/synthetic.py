"""In-memory synthetic tensors: value = f(index), so a test can name any missing example."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf

GOLDEN = (5**0.5 - 1) / 2


def skewed_labels(index, fractions) -> np.ndarray:
    """Class of each ``index`` drawn with frequencies ``fractions`` by the golden-ratio sequence.

    ``frac(i * 0.618...)`` spreads evenly over [0, 1), so every run of consecutive indices (a
    shard, a batch) holds the fractions to within a few examples; no random state."""
    edges = np.cumsum(fractions) / np.sum(fractions)
    u = (np.asarray(index, np.float64) * GOLDEN) % 1.0
    return np.minimum(np.searchsorted(edges, u, side="right"), len(fractions) - 1).astype(np.int64)


def indexed(
    count: int, spec: Mapping[str, tf.TensorSpec], *, num_classes: int = 10, fractions: tuple[float, ...] = ()
) -> tf.data.Dataset:
    """``count`` examples; example ``i`` has ``id == i``, ``label == i % num_classes`` (or by
    ``fractions``: :func:`skewed_labels`) and every other feature filled with a value derived
    from ``i`` (deterministic, no files)."""
    table = tf.constant(skewed_labels(np.arange(count), fractions)) if fractions else None

    def make(i: tf.Tensor) -> dict[str, tf.Tensor]:
        out = {"id": i, "label": tf.gather(table, i) if table is not None else i % num_classes}
        for name, s in spec.items():
            if name in out:
                continue
            base = tf.cast(i % 251, tf.float32) / 251.0
            out[name] = tf.cast(tf.fill(s.shape, base) * (255.0 if s.dtype == tf.uint8 else 1.0), s.dtype)
        return out

    return tf.data.Dataset.range(count).map(make)
