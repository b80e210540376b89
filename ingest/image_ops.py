"""Per-image operations for ImageNet-style training: reusable stages, not tied to a dataset.

Plain tensor functions (no Python control flow on tensors), so each runs eagerly, inside
``Dataset.map`` and inside a ``tf.function`` alike. Randomness is stateless and keyed by a
seed tensor, so parallel maps give the values a sequential map gives.

- :func:`random_resized_crop`: a random window (area and aspect ratio as torchvision's
  ``RandomResizedCrop``), decoded alone with ``decode_and_crop_jpeg`` when ``fused``, flipped
  at random, resized; float32 in 0..255. ``scaled`` also decodes the window at reduced DCT scale
  (libjpeg's 1/2, 1/4 or 1/8 IDCT) when it is at least that many times the output on both sides:
  fewer pixels decoded and resized, at a small cost in fidelity (``make bench``'s ``decode``
  suite states the PSNR against full-scale decoding).
- :func:`center_crop`: evaluation's view: the central square holding :data:`CENTER` of the
  shorter side (the usual "resize to crop / 0.875, then center crop"), decoded alone and resized;
  float32 in 0..255. Any image size and aspect ratio in, ``[crop, crop, 3]`` out.
- :func:`normalize`: ``(x / 255 - mean) / std`` per channel as one multiply and one add.
"""

from __future__ import annotations

import tensorflow as tf

AREA = (0.08, 1.0)  # random resized crop: fraction of the image area kept
RATIO = (3 / 4, 4 / 3)  # random resized crop: aspect ratios allowed
CENTER = 0.875  # center crop: share of the shorter side kept (224 of 256, as ImageNet evaluation)

# AutoGraph is told not to convert these: there is nothing to convert, and it keeps AutoGraph
# from re-reading other modules' source files.
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


RATIOS = (1, 2, 4, 8)  # DCT scales libjpeg decodes at


@graph_fn
def dct_ratio(window: tf.Tensor, crop: int) -> tf.Tensor:
    """Index into :data:`RATIOS` of the largest scale whose decoded window still has ``crop`` pixels a side."""
    short = tf.minimum(window[2], window[3])
    return tf.reduce_sum(tf.cast(tf.stack([short >= r * crop for r in RATIOS[1:]]), tf.int32))


@graph_fn
def decode_window_scaled(jpeg: tf.Tensor, window: tf.Tensor, crop: int) -> tf.Tensor:
    """The ``window`` of ``jpeg`` decoded at the largest DCT scale that keeps ``crop`` pixels a side
    (the window's corners rounded down to that scale's grid)."""

    def at(r: int):
        return lambda: tf.io.decode_and_crop_jpeg(jpeg, window // r, channels=3, ratio=r)

    return tf.switch_case(dct_ratio(window, crop), [at(r) for r in RATIOS])


@graph_fn
def random_resized_crop(
    jpeg: tf.Tensor, seed: tf.Tensor, *, crop: int, fused: bool = True, scaled: bool = False
) -> tf.Tensor:
    """float32 [crop, crop, 3] in 0..255 from JPEG bytes: random window, randomly flipped, resized.

    ``fused`` decodes only the window (``decode_and_crop_jpeg``); otherwise the whole image
    is decoded and then cropped, which is what most hand-written pipelines do. ``scaled`` (fused
    only) decodes the window at reduced DCT scale where it is large enough (:func:`decode_window_scaled`).
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    window = crop_window(tf.io.extract_jpeg_shape(jpeg), seeds[0])
    if fused and scaled:
        image = decode_window_scaled(jpeg, window, crop)
    elif fused:
        image = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
    else:
        image = tf.io.decode_jpeg(jpeg, channels=3)
        image = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
    return _flip_and_resize(image, seeds[1], crop)


@graph_fn
def random_resized_crop_pixels(image: tf.Tensor, seed: tf.Tensor, *, crop: int) -> tf.Tensor:
    """:func:`random_resized_crop` of an already decoded uint8 image (e.g. a pixel cache)."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    y, x, h, w = tf.unstack(crop_window(tf.shape(image), seeds[0]))
    return _flip_and_resize(image[y : y + h, x : x + w], seeds[1], crop)


@graph_fn
def center_window(shape: tf.Tensor, fraction: float = CENTER) -> tf.Tensor:
    """[y, x, h, w] of the central square of an image of ``shape`` whose side is ``fraction`` of the shorter side."""
    h, w = shape[0], shape[1]
    side = tf.maximum(tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * fraction, tf.int32), 1)
    return tf.stack([(h - side) // 2, (w - side) // 2, side, side])


@graph_fn
def center_crop(jpeg: tf.Tensor, *, crop: int, fraction: float = CENTER) -> tf.Tensor:
    """float32 [crop, crop, 3] in 0..255 from JPEG bytes: the central window (:func:`center_window`),
    decoded alone (``decode_and_crop_jpeg``) and resized. Deterministic: evaluation's view."""
    window = center_window(tf.io.extract_jpeg_shape(jpeg), fraction)
    image = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
    return tf.image.resize(image, [crop, crop], method="bilinear")


def _flip_and_resize(window: tf.Tensor, seed: tf.Tensor, crop: int) -> tf.Tensor:
    # Flip the uint8 window before resizing: the same result as flipping after, on fewer bytes.
    window = tf.image.stateless_random_flip_left_right(window, seed=seed)
    return tf.image.resize(window, [crop, crop], method="bilinear")


@graph_fn
def normalize(image: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
    """float 0..255 to (x / 255 - mean) / std per channel, as one multiply and one add."""
    scale = 1.0 / (255.0 * std)
    return image * scale - mean / std
