"""An ImageNet-style view of the ``shapes`` files for the benchmarks (not a registered dataset).

:class:`ImagenetShapes` reads the same TFRecord shards as ``shapes`` but its batched parse
keeps the JPEG bytes (so a cache holds compressed bytes, which fit in memory), and its
augmentation is ImageNet training preprocessing from ``ingest.image_ops``: random resized crop
to ``crop`` (fused ``decode_and_crop_jpeg``: only the crop window is decoded), random flip,
then normalize. The class is benchmark glue; the per-image work is stoker's own stage code.
"""

from __future__ import annotations

import tensorflow as tf

from ingest import image_ops
from ingest.datasets.shapes import Shapes

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "id": tf.io.FixedLenFeature([], tf.int64),
}
# The per-example ops are stoker's own (``ingest.image_ops``); this module only wires them to the
# shapes files. AutoGraph is told not to convert the methods below (plain tensor code).
graph_fn = image_ops.graph_fn


class ImagenetShapes(Shapes):
    """``shapes`` files with ImageNet training preprocessing (not registered: benchmarks only)."""

    decodes_every_epoch = True  # every epoch decodes each JPEG again: the decode bound applies

    def __init__(self, options=None, *, crop: int = 224, fused: bool = True) -> None:
        super().__init__(options)
        self.crop, self.fused = crop, fused

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        return {
            "image": tf.TensorSpec([], tf.string),
            "label": tf.TensorSpec([], tf.int64),
            "id": tf.TensorSpec([], tf.int64),
        }

    def example_bytes(self) -> int:
        """Mean bytes of one stored record (the cache holds JPEG bytes, not pixels)."""
        shards = self.info.get("splits", {}).get("train", {}).get("shards", [])
        records = sum(s["num_examples"] for s in shards)
        return sum(s["bytes"] for s in shards) // records if records else 64 * 1024

    @graph_fn
    def parse(self, records: tf.Tensor) -> dict[str, tf.Tensor]:
        """Parse a batch of Examples; the JPEGs stay encoded (decoded in augment)."""
        return tf.io.parse_example(records, FEATURES)

    @graph_fn
    def augment(self, example: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Random resized crop (decoding only the window when fused) and flip."""
        return dict(
            example, image=image_ops.random_resized_crop(example["image"], seed, crop=self.crop, fused=self.fused)
        )

    @graph_fn
    def preprocess(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Normalize by the train split's channel mean and std."""
        return dict(example, image=image_ops.normalize(example["image"], *self.moments()))

    def moments(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Channel mean and std of the train split (from dataset_info.json)."""
        mean = tf.constant(self.info.get("mean", [0.5] * 3), tf.float32)
        return mean, tf.constant(self.info.get("std", [0.25] * 3), tf.float32)


class PixelShapes(ImagenetShapes):
    """Like :class:`ImagenetShapes`, but parse decodes (as ``shapes`` does), so a cache holds pixels.

    Cache placement: after the first epoch nothing is decoded again, so its rate is not
    bounded by the decode bound; it costs ``image_size**2 * 3`` bytes per example of memory.
    """

    decodes_every_epoch = False

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        return Shapes.element_spec.fget(self)

    def example_bytes(self) -> int:
        return Shapes.example_bytes(self)

    @graph_fn
    def parse(self, records: tf.Tensor) -> dict[str, tf.Tensor]:
        """Parse a batch of Examples and decode every JPEG (uint8 pixels)."""
        return Shapes.parse(self, records)

    @graph_fn
    def augment(self, example: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Random resized crop of the decoded pixels, then flip."""
        return dict(example, image=image_ops.random_resized_crop_pixels(example["image"], seed, crop=self.crop))
