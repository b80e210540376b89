"""An ImageNet-style view of the ``shapes`` files, and the per-example work every loader copies.

:class:`ImagenetShapes` reads the same TFRecord shards as ``shapes`` but its batched parse
keeps the JPEG bytes (so a cache holds compressed bytes, which fit in memory), and its
augmentation is ImageNet training preprocessing: random resized crop to ``crop`` (fused
``decode_and_crop_jpeg``: only the crop window is decoded), random flip, then normalize.
"""

from __future__ import annotations

import tensorflow as tf

from ingest.datasets.shapes import Shapes

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "id": tf.io.FixedLenFeature([], tf.int64),
}
AREA = (0.08, 1.0)  # random resized crop: fraction of the image area kept
RATIO = (3 / 4, 4 / 3)  # random resized crop: aspect ratios allowed


# Plain tensor code with no Python control flow on tensors: AutoGraph is told not to convert it,
# which also keeps it from re-reading other modules' source files while they are being edited.
graph_fn = tf.autograph.experimental.do_not_convert


@graph_fn
def crop_window(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[y, x, h, w] of a random-resized-crop window of an image of ``shape`` (stateless, keyed by ``seed``)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=RATIO,
        area_range=AREA,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


@graph_fn
def random_resized_crop(jpeg: tf.Tensor, seed: tf.Tensor, *, crop: int, fused: bool = True) -> tf.Tensor:
    """float32 [crop, crop, 3] in 0..255: random window, resized, randomly flipped.

    ``fused`` decodes only the window (``decode_and_crop_jpeg``); otherwise the whole image
    is decoded and then cropped, which is what most hand-written pipelines do.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    window = crop_window(tf.io.extract_jpeg_shape(jpeg), seeds[0])
    if fused:
        image = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
    else:
        image = tf.io.decode_jpeg(jpeg, channels=3)
        image = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
    # Flip the uint8 window before resizing: the same result as flipping after, on a quarter of the bytes.
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return tf.image.resize(image, [crop, crop], method="bilinear")


@graph_fn
def normalize(image: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
    """float 0..255 to (x / 255 - mean) / std per channel, as one multiply and one add."""
    scale = 1.0 / (255.0 * std)
    return image * scale - mean / std


class ImagenetShapes(Shapes):
    """``shapes`` files with ImageNet training preprocessing (not registered: benchmarks only)."""

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
        return dict(example, image=random_resized_crop(example["image"], seed, crop=self.crop, fused=self.fused))

    @graph_fn
    def preprocess(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Normalize by the train split's channel mean and std."""
        return dict(example, image=normalize(example["image"], *self.moments()))

    def moments(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Channel mean and std of the train split (from dataset_info.json)."""
        mean = tf.constant(self.info.get("mean", [0.5] * 3), tf.float32)
        return mean, tf.constant(self.info.get("std", [0.25] * 3), tf.float32)


class PixelShapes(ImagenetShapes):
    """Like :class:`ImagenetShapes`, but parse decodes (as ``shapes`` does), so a cache holds pixels.

    Cache placement: after the first epoch nothing is decoded again, so its rate is not
    bounded by the decode ceiling; it costs ``image_size**2 * 3`` bytes per example of memory.
    """

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
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
        image = example["image"]
        y, x, h, w = tf.unstack(crop_window(tf.shape(image), seeds[0]))
        image = tf.image.stateless_random_flip_left_right(image[y : y + h, x : x + w], seed=seeds[1])
        return dict(example, image=tf.image.resize(image, [self.crop, self.crop], method="bilinear"))
