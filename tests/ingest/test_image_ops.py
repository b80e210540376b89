"""Per-image ops (``ingest.image_ops``): each checked eagerly and inside ``Dataset.map``."""

import numpy as np
import pytest
import tensorflow as tf

from ingest import image_ops

CROP = 32


def _jpeg(seed: int, h: int = 60, w: int = 80) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    pixels = (rng.integers(0, 256, (h // 4, w // 4, 3)).repeat(4, 0).repeat(4, 1)).astype(np.uint8)
    return tf.io.encode_jpeg(pixels, quality=95)


def _seed(i) -> tf.Tensor:
    return tf.stack([tf.constant(7, tf.int64), tf.cast(i, tf.int64)])


@pytest.mark.parametrize("fused", [True, False])
def test_random_resized_crop_shape_range_and_determinism(fused):
    jpeg = _jpeg(0)
    a = image_ops.random_resized_crop(jpeg, _seed(1), crop=CROP, fused=fused)
    b = image_ops.random_resized_crop(jpeg, _seed(1), crop=CROP, fused=fused)
    c = image_ops.random_resized_crop(jpeg, _seed(2), crop=CROP, fused=fused)
    assert a.shape == (CROP, CROP, 3) and a.dtype == tf.float32
    assert float(tf.reduce_min(a)) >= 0.0 and float(tf.reduce_max(a)) <= 255.0
    np.testing.assert_array_equal(a.numpy(), b.numpy())  # stateless: the same seed, the same crop
    assert not np.array_equal(a.numpy(), c.numpy())


def test_eager_equals_dataset_map_for_every_op():
    jpegs = tf.stack([_jpeg(i) for i in range(4)])
    mean, std = tf.constant([0.4, 0.5, 0.6]), tf.constant([0.2, 0.25, 0.3])

    def work(i, jpeg):
        return image_ops.normalize(image_ops.random_resized_crop(jpeg, _seed(i), crop=CROP), mean, std)

    ds = tf.data.Dataset.from_tensor_slices(jpegs).enumerate().map(work)
    for i, mapped in enumerate(ds):
        np.testing.assert_allclose(mapped.numpy(), work(i, jpegs[i]).numpy(), rtol=0, atol=1e-6)


def test_fused_decode_and_pixel_crop_see_the_same_window():
    """The fused decode, decode-then-crop and the crop of decoded pixels agree for one seed."""
    jpeg = _jpeg(3)
    full = image_ops.random_resized_crop(jpeg, _seed(5), crop=CROP, fused=False)
    pixels = image_ops.random_resized_crop_pixels(tf.io.decode_jpeg(jpeg, channels=3), _seed(5), crop=CROP)
    np.testing.assert_array_equal(full.numpy(), pixels.numpy())
    fused = image_ops.random_resized_crop(jpeg, _seed(5), crop=CROP, fused=True)
    # libjpeg decodes a window from its enclosing blocks: edges may differ by rounding, not by content
    assert float(tf.reduce_mean(tf.abs(fused - full))) < 2.0


def test_normalize_is_x_over_255_minus_mean_over_std():
    x = tf.random.stateless_uniform([5, 5, 3], seed=[1, 2], maxval=255.0)
    mean, std = tf.constant([0.4, 0.5, 0.6]), tf.constant([0.2, 0.25, 0.3])
    np.testing.assert_allclose(image_ops.normalize(x, mean, std).numpy(), ((x / 255.0 - mean) / std).numpy(), atol=1e-5)
