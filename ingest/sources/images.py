"""A folder of JPEG images with one subfolder per class (``root/<class>/<file>.jpg``)."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from stoker.errors import DataError

_SUFFIXES = {".jpg", ".jpeg", ".JPG", ".JPEG"}


def list_folder(root: str | Path) -> tuple[list[str], list[int], list[str]]:
    """Paths, integer labels and class names (sorted subfolder names) under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist; point DATA_DIR at a folder of class subfolders")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix in _SUFFIXES:
                paths.append(str(f))
                labels.append(label)
    if not paths:
        raise DataError(f"no .jpg/.jpeg files in class subfolders of {str(root)!r} (found folders: {classes})")
    return paths, labels, classes


def read(paths: list[str], labels: list[int]) -> tf.data.Dataset:
    """(encoded JPEG bytes, label) pairs; decode belongs to the parse stage."""
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    return ds.map(lambda p, y: {"jpeg": tf.io.read_file(p), "label": tf.cast(y, tf.int64)})


def decode(jpeg: tf.Tensor, size: int) -> tf.Tensor:
    """Decode one JPEG to ``size`` x ``size`` x 3 uint8 (resized if it differs)."""
    image = tf.io.decode_jpeg(jpeg, channels=3)
    image = tf.image.resize(image, [size, size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def check(path: str) -> str:
    """'' when ``path`` decodes as a JPEG, else the decoder's complaint (names the bad file)."""
    try:
        tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as err:
        return err.message.splitlines()[0][:200]
    return ""
