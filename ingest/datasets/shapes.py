"""``shapes``: colored shapes on noisy backgrounds, as JPEG in TFRecord shards (the default).

Example ``i`` of a split is drawn from a generator seeded by (seed, split, i), so the data
is the same on every machine and runner. Four classes (circle, square, triangle, cross);
size, position, color and background noise vary. ``data.image_size`` sets the resolution
(64 for training, 256 for the benchmarks); ``data.train_examples`` the size.

``data.class_fractions=0.9,0.05,0.03,0.02`` skews the train split's classes (the validation
split stays uniform, so each class's recall is measured on as many examples); such a dataset
lives in its own folder, ``shapes-skew-0.9-0.05-0.03-0.02``, beside the uniform one.
"""

from __future__ import annotations

import functools
import io
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from ingest.dataset import Dataset
from ingest.options import DataOptions
from ingest.prepare import beam_job
from ingest.sources import synthetic
from stoker import storage

LABELS = ("circle", "square", "triangle", "cross")
DEFAULT_SIZES = {"train": 8000, "validation": 1000}
_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "id": tf.io.FixedLenFeature([], tf.int64),
}


def label_of(split: str, index: int, fractions: tuple[float, ...] = ()) -> int:
    """Example ``index``'s class: round-robin, or by ``fractions`` in the train split (golden-ratio
    sequence, ``ingest.sources.synthetic.skewed_labels``: each shard holds the fractions)."""
    if not fractions or split != "train":
        return int(index % len(LABELS))
    return int(synthetic.skewed_labels([index], fractions)[0])


def draw(seed: int, split: str, index: int, size: int, fractions: tuple[float, ...] = ()) -> tuple[np.ndarray, int]:
    """The uint8 [size, size, 3] image and label of example ``index`` (deterministic)."""
    rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index])
    label = label_of(split, index, fractions)
    background = rng.integers(0, 256, 3)
    pixels = np.clip(background + rng.normal(0, 24, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    pen = ImageDraw.Draw(image)
    color = tuple(int(c) for c in (background + 128 + rng.integers(-40, 40, 3)) % 256)
    r = rng.uniform(0.18, 0.32) * size
    cx, cy = rng.uniform(r, size - r, 2)
    if LABELS[label] == "circle":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif LABELS[label] == "square":
        pen.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif LABELS[label] == "triangle":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    else:
        w = r / 3
        pen.rectangle([cx - r, cy - w, cx + r, cy + w], fill=color)
        pen.rectangle([cx - w, cy - r, cx + w, cy + r], fill=color)
    return np.asarray(image), label


def make_example(
    split: str, index: int, *, seed: int, size: int, fractions: tuple[float, ...] = ()
) -> tuple[bytes, np.ndarray]:
    """A serialized tf.train.Example and the pixel statistics (sum, sum of squares, count)."""
    pixels, label = draw(seed, split, index, size, fractions)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buf.getvalue()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
    }
    flat = pixels.reshape(-1, 3).astype(np.float64) / 255.0
    stats = np.stack([flat.sum(0), (flat**2).sum(0), np.full(3, len(flat))])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(), stats


class Shapes(Dataset):
    """Colored shapes, JPEG-encoded in TFRecord shards; decoded in the batched parse."""

    name = "shapes"
    validates = True
    validation_ignore = ("id", "image")  # JPEG bytes: no domain; class-pure shards are detected, see ingest.validation
    has_augment = True
    batch_preprocess = True  # element-wise normalization

    def __init__(self, options: DataOptions | None = None) -> None:
        super().__init__(options)
        fractions = self.options.class_fractions
        if fractions and len(fractions) != len(LABELS):
            raise ValueError(
                f"data.class_fractions has {len(fractions)} values; shapes has {len(LABELS)} classes "
                f"({', '.join(LABELS)})"
            )

    @property
    def root(self) -> Path | storage.Url:
        """``<data_dir>/shapes``, or ``shapes-skew-<fractions>`` with ``data.class_fractions``."""
        fractions = self.options.class_fractions
        if not fractions:
            return super().root
        total = sum(fractions)
        return storage.location(self.options.data_dir) / (
            "shapes-skew-" + "-".join(f"{f / total:.3g}" for f in fractions)
        )

    @property
    def size(self) -> int:
        return int(self.info.get("image_size", self.options.image_size))

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        return {
            "image": tf.TensorSpec([self.size, self.size, 3], tf.uint8),
            "label": tf.TensorSpec([], tf.int64),
            "id": tf.TensorSpec([], tf.int64),
        }

    @property
    def num_classes(self) -> int:
        return len(LABELS)

    def mismatch(self) -> str:
        """How the prepared files differ from what the options ask for ('' when they agree)."""
        info, o = self.info, self.options
        splits = info.get("splits", {})
        wanted = {"train": o.train_examples, "validation": o.eval_examples, "image_size": o.image_size}
        have = {
            "train": splits.get("train", {}).get("num_examples"),
            "validation": splits.get("validation", {}).get("num_examples"),
            "image_size": info.get("image_size"),
        }
        diff = [f"{k} {have[k]} (asked {v})" for k, v in wanted.items() if v and have[k] is not None and have[k] != v]
        return ", ".join(diff)

    def parse(self, records: tf.Tensor) -> dict[str, tf.Tensor]:
        """Parse a batch of serialized Examples and decode their JPEGs to uint8."""
        ex = tf.io.parse_example(records, _FEATURES)
        return {"image": self._decode(ex["image"]), "label": ex["label"], "id": ex["id"]}

    def _decode(self, jpegs: tf.Tensor) -> tf.Tensor:
        """A batch of JPEG bytes to uint8 ``[batch, size, size, 3]`` (parse's decode, and serving's)."""
        size = self.size
        return tf.map_fn(
            lambda b: tf.ensure_shape(tf.io.decode_jpeg(b, channels=3), [size, size, 3]),
            jpegs,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
        )

    serves_image_bytes = True

    def from_image_bytes(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Serving: JPEG bytes of ``data.image_size`` squares decoded as :meth:`parse` decodes them."""
        return {"image": self._decode(images)}

    def parse_labels(self, records: tf.Tensor) -> tf.Tensor:
        """The labels alone (no JPEG decoded): class balance counts classes with it."""
        return tf.io.parse_example(records, {"label": _FEATURES["label"]})["label"]

    def augment(self, example: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Random horizontal flip (stateless, keyed by ``seed``)."""
        image = tf.image.stateless_random_flip_left_right(example["image"], seed=seed)
        return dict(example, image=image)

    def preprocess(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """uint8 to float32, normalized by the per-channel mean and std of the train split."""
        mean = tf.constant(self.info.get("mean", [0.5] * 3), tf.float32)
        std = tf.constant(self.info.get("std", [0.25] * 3), tf.float32)
        image = (tf.cast(example["image"], tf.float32) / 255.0 - mean) / std
        return dict(example, image=image)

    def prepare(self, runner: str = "DirectRunner", beam_args: list[str] | None = None) -> dict:
        """Generate the dataset with a Beam job (``make prepare DATASET=shapes``)."""
        o: DataOptions = self.options
        splits = {
            "train": o.train_examples or DEFAULT_SIZES["train"],
            "validation": o.eval_examples or DEFAULT_SIZES["validation"],
        }
        fractions = tuple(o.class_fractions)
        make = functools.partial(make_example, seed=o.seed, size=o.image_size, fractions=fractions)
        info = {
            "name": self.name,
            "version": "1.0.0",
            "image_size": o.image_size,
            "seed": o.seed,
            "label_names": list(LABELS),
            "class_fractions": list(fractions),
            "features": {"image": "jpeg bytes", "label": "int64", "id": "int64"},
        }
        return beam_job.run(
            self.root,
            make,
            splits=splits,
            shards=o.shards or 8,
            compression=o.compression,
            info=info,
            runner=runner,
            beam_args=beam_args,
        )
