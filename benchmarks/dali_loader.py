"""A DALI CPU pipeline over the same TFRecord shards (``device_id=None``: no GPU needed).

Reads with DALI's TFRecord reader (index files from :func:`benchmarks.data.dali_index`),
decodes only a random window (``decoders.image_random_crop``), resizes, flips and
normalizes to float32 HWC batches with int64 labels, handed to TensorFlow through the DALI
plugin's ``DALIDataset``: the same framework tensors as the tf.data rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def pipeline(
    files: Sequence[str],
    index: Sequence[str],
    *,
    batch: int,
    threads: int,
    crop: int,
    mean: Sequence[float],
    std: Sequence[float],
    shuffle_buffer: int,
    seed: int = 0,
) -> Any:
    """A DALI pipeline on the CPU giving (images [batch, crop, crop, 3] float32, labels [batch] int64)."""
    import nvidia.dali.fn as fn
    import nvidia.dali.tfrecord as tfrec
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=None, seed=seed)
    def define():
        features = {
            "image": tfrec.FixedLenFeature((), tfrec.string, ""),
            "label": tfrec.FixedLenFeature([1], tfrec.int64, -1),
        }
        ex = fn.readers.tfrecord(
            path=list(files),
            index_path=list(index),
            features=features,
            random_shuffle=True,
            initial_fill=shuffle_buffer,
            name="reader",
        )
        images = fn.decoders.image_random_crop(
            ex["image"],
            device="cpu",
            output_type=types.RGB,
            random_area=[0.08, 1.0],
            random_aspect_ratio=[3 / 4, 4 / 3],
            num_attempts=10,
        )
        images = fn.resize(images, resize_x=crop, resize_y=crop)
        images = fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT,
            output_layout="HWC",
            mean=[m * 255 for m in mean],
            std=[s * 255 for s in std],
            mirror=fn.random.coin_flip(),
        )
        return images, fn.reshape(ex["label"], shape=[])

    return define()


def dataset(pipe: Any, *, batch: int, crop: int, threads: int) -> Any:
    """``pipe`` as a ``tf.data.Dataset`` of (images, labels) TensorFlow tensors (DALI's TF plugin, CPU)."""
    import tensorflow as tf
    from nvidia.dali.plugin.tf import DALIDataset

    with tf.device("/cpu:0"):
        # device_id=None without a GPU: the plugin's default (0) aborts the process.
        return DALIDataset(
            pipeline=pipe,
            batch_size=batch,
            output_shapes=((batch, crop, crop, 3), (batch,)),
            output_dtypes=(tf.float32, tf.int64),
            device_id=None,
            num_threads=threads,
        )
