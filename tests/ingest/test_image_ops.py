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


@pytest.mark.parametrize(
    ("window", "ratio"),
    [([0, 0, 63, 400], 1), ([0, 0, 64, 64], 2), ([8, 8, 130, 140], 4), ([0, 0, 256, 300], 8), ([0, 0, 300, 255], 4)],
)
def test_dct_ratio_is_the_largest_scale_keeping_the_output_size(window, ratio):
    assert image_ops.RATIOS[int(image_ops.dct_ratio(tf.constant(window), CROP))] == ratio


def test_reduced_scale_decode_equals_full_scale_below_twice_the_output_and_stays_close_above():
    small = _jpeg(3, 60, 80)  # every window is < 2 x 32 on its short side or exactly the full path
    for i in range(8):
        a = image_ops.random_resized_crop(small, _seed(i), crop=CROP, fused=True)
        seeds = tf.random.experimental.stateless_split(tf.cast(_seed(i), tf.int64), num=2)
        window = image_ops.crop_window(tf.io.extract_jpeg_shape(small), seeds[0])
        b = image_ops.random_resized_crop(small, _seed(i), crop=CROP, fused=True, scaled=True)
        if int(image_ops.dct_ratio(window, CROP)) == 0:
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    big = _jpeg(4, 512, 640)  # smooth 4x4 blocks upsampled: windows of 128+ px decode at 1/4 or 1/8
    window = tf.constant([64, 96, 384, 400])
    scaled = image_ops.decode_window_scaled(big, window, CROP)
    assert scaled.shape == (384 // 8, 400 // 8, 3)
    whole = tf.io.decode_and_crop_jpeg(big, window, channels=3)
    ref = tf.image.resize(whole, [CROP, CROP], antialias=True)
    mse = float(tf.reduce_mean((tf.image.resize(scaled, [CROP, CROP]) - ref) ** 2))
    assert 10 * np.log10(255**2 / mse) > 20  # close: a fraction of the pixels decoded, not another image
    for i in range(4):  # inside Dataset.map too
        out = next(
            iter(
                tf.data.Dataset.from_tensors(big).map(
                    lambda j, i=i: image_ops.random_resized_crop(j, _seed(i), crop=CROP, scaled=True)
                )
            )
        )
        assert out.shape == (CROP, CROP, 3)


@pytest.mark.parametrize(("h", "w"), [(60, 80), (80, 60), (33, 33), (200, 45)])
def test_center_crop_is_the_central_square_of_the_shorter_side_resized(h, w):
    jpeg = _jpeg(6, h, w)
    out = image_ops.center_crop(jpeg, crop=CROP)
    assert out.shape == (CROP, CROP, 3) and out.dtype == tf.float32
    full = tf.io.decode_jpeg(jpeg, channels=3)
    h, w = full.shape[:2]  # _jpeg rounds sides down to its 4 px blocks
    side = int(min(h, w) * image_ops.CENTER)
    full = full[(h - side) // 2 :, (w - side) // 2 :][:side, :side]
    expected = tf.image.resize(full, [CROP, CROP], method="bilinear")
    # decode_and_crop_jpeg decodes the window from its enclosing blocks: rounding differences only
    assert float(tf.reduce_mean(tf.abs(out - expected))) < 2.0
    mapped = next(iter(tf.data.Dataset.from_tensors(jpeg).map(lambda j: image_ops.center_crop(j, crop=CROP))))
    np.testing.assert_array_equal(mapped.numpy(), out.numpy())
