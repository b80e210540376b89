"""An image folder as lists of examples, and one example made from one file (``DATASET=images``).

Host side, before the Beam job: :func:`listing` reads the layout — ``SOURCE/<class>/<file>``, or
``SOURCE/train/<class>/...`` beside ``SOURCE/validation/`` (or ``val/``) — checks it (a class
folder without images, a single class), and, without a validation folder, holds out a seeded
share of every class (stratified: each class keeps its proportion in both splits).

In the Beam job: :func:`make_example` opens one file with Pillow, which decodes it completely
(so a truncated or corrupt file is caught here, not in training), keeps a JPEG's own bytes when
nothing needs changing, and otherwise (PNG, BMP, GIF's first frame, CMYK, a rotated photo, a side
longer than ``max_side``) re-encodes it as JPEG. A file that is not a readable image raises
:class:`~ingest.prepare.beam_job.BadExample`, which the job lists rather than failing on the first.
"""

from __future__ import annotations

import dataclasses
import io
import os
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from ingest.prepare.beam_job import BadExample
from stoker.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
VALIDATION_FOLDERS = ("validation", "val")
JPEG_QUALITY = 90  # re-encoded files: visually lossless for training, a third of PNG's bytes
_ORIENTATION = 0x0112  # EXIF tag: how a camera's picture must be turned to stand upright
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@dataclasses.dataclass(frozen=True)
class Listing:
    """What an image folder holds: class names, and per split the (file relative to SOURCE, label) pairs."""

    label_names: tuple[str, ...]
    splits: dict[str, list[tuple[str, int]]]
    layout: str  # "classes" (SOURCE/<class>/) or "splits" (SOURCE/train/<class>/ + validation)

    def counts(self) -> dict[str, list[int]]:
        """Examples per class, per split (before any file is found unreadable)."""
        out = {}
        for split, items in self.splits.items():
            counts = np.bincount([label for _, label in items], minlength=len(self.label_names))
            out[split] = counts.tolist()
        return out


def _hidden(path: Path, top: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(top).parts)


def _class_files(folder: Path) -> list[Path]:
    """Every file under one class folder (nested folders too), hidden ones left out, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder))


def _class_folders(top: Path, shown: str) -> dict[str, list[Path]]:
    """``{class: files}`` of ``top``'s subfolders; a folder with no image file is an error."""
    folders = sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = {}
    for folder in folders:
        found = _class_files(folder)
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in found):
            raise DataError(
                f"class folder {shown}/{folder.name} holds no images ({' '.join(IMAGE_SUFFIXES)}): "
                f"add some, or remove the folder"
            )
        out[folder.name] = found
    return out


def _check_source(source: str) -> Path:
    top = Path(source)
    if not top.exists():
        raise DataError(
            f"SOURCE={source!r} does not exist: give the folder that holds one subfolder per class "
            f"(SOURCE/<class>/<image>)"
        )
    if not top.is_dir():
        raise DataError(
            f"SOURCE={source!r} is a file: DATASET=images takes a folder with one subfolder per class "
            f"(SOURCE/<class>/<image>)"
        )
    return top


def _split_folders(top: Path) -> dict[str, Path]:
    """``{"train": ..., "validation": ...}`` when ``top`` is laid out by split, else {}."""
    names = {p.name for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if "train" not in names or not names <= {"train", "test", *VALIDATION_FOLDERS}:
        return {}
    out = {"train": top / "train"}
    for name in VALIDATION_FOLDERS:
        if name in names:
            out["validation"] = top / name
            break
    return out


def folders(source: str) -> dict[str, dict[str, list[Path]]]:
    """Split -> class -> files of SOURCE, as laid out (one "train" entry when SOURCE has no splits)."""
    top = _check_source(source)
    by_split = _split_folders(top) or {"train": top}
    out = {split: _class_folders(folder, str(folder)) for split, folder in by_split.items()}
    train = out["train"]
    if not train:
        empty = "is empty" if not any(top.iterdir()) else "has no class folders"
        raise DataError(
            f"SOURCE={source!r} {empty}: put each class's images in SOURCE/<class>/ "
            f"(or SOURCE/train/<class>/ and SOURCE/validation/<class>/)"
        )
    if len(train) == 1:
        raise DataError(
            f"SOURCE={source!r} has one class folder ({next(iter(train))}): a classifier needs at least two; "
            f"add a folder per class"
        )
    unknown = sorted(set(out.get("validation", {})) - set(train))
    if unknown:
        raise DataError(
            f"{by_split['validation']} has class folders that {by_split['train']} lacks: {', '.join(unknown)}; "
            f"give every class a train folder, or remove these"
        )
    return out


def source_files(source: str) -> list[str]:
    """Every file the listing would use (what a prepared folder's fingerprint is made of), sorted."""
    return sorted(str(p) for classes in folders(source).values() for files in classes.values() for p in files)


def _holdout(files: list[Path], fraction: float, seed: int, name: str) -> tuple[list[Path], list[Path]]:
    """(train, validation) of one class: a seeded ``fraction`` held out, at least one of each when it can."""
    if fraction <= 0 or len(files) < 2:
        return files, []
    order = np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(len(files))
    held = min(max(1, round(fraction * len(files))), len(files) - 1)
    chosen = set(order[:held].tolist())
    return [f for i, f in enumerate(files) if i not in chosen], [f for i, f in enumerate(files) if i in chosen]


def listing(source: str, *, validation_fraction: float, seed: int) -> Listing:
    """The examples of SOURCE per split; classes are the train folders' names, sorted."""
    top = Path(source)
    found = folders(source)
    names = tuple(sorted(found["train"]))
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "validation": []}
    for label, name in enumerate(names):
        train = found["train"][name]
        if "validation" in found:
            held = found["validation"].get(name, [])
        else:
            train, held = _holdout(train, validation_fraction, seed, name)
        splits["train"] += [(p, label) for p in train]
        splits["validation"] += [(p, label) for p in held]
    out = {}
    for split, items in splits.items():
        if not items:
            continue
        # Shuffled once, seeded: every shard then holds every class (shard = index % shards).
        order = np.random.default_rng([seed, zlib.crc32(split.encode())]).permutation(len(items))
        out[split] = [(str(items[i][0].relative_to(top)), items[i][1]) for i in order]
    return Listing(names, out, "splits" if _split_folders(top) else "classes")


# ---- in the Beam job ------------------------------------------------------------------------
def encode(path: str, max_side: int) -> tuple[bytes, np.ndarray]:
    """(JPEG bytes, uint8 RGB pixels) of the image file ``path``; raises :class:`BadExample` if unreadable."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        with Image.open(io.BytesIO(raw)) as image:
            image.load()  # decodes every pixel: a truncated or corrupt file fails here
            keep = image.format == "JPEG" and image.mode in ("RGB", "L")
            turned = image.getexif().get(_ORIENTATION, 1) not in (0, 1)
            rgb = _upright(image).convert("RGB") if turned else image.convert("RGB")
    except FileNotFoundError:
        raise
    except Image.UnidentifiedImageError:
        raise BadExample(path, "not an image file (JPEG, PNG, BMP or GIF expected)") from None
    except _UNREADABLE as err:  # a known format, damaged: Pillow says where
        raise BadExample(path, f"a damaged image ({err})") from None
    if max_side and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)  # keeps the aspect ratio
        keep = False
    if keep and not turned:
        return raw, np.asarray(rgb)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), np.asarray(rgb)


def _upright(image: Image.Image) -> Image.Image:
    from PIL import ImageOps

    return ImageOps.exif_transpose(image)


def _feature(value: bytes | int) -> tf.train.Feature:
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(
    split: str, index: int, *, source: str, items: dict[str, list[tuple[str, int]]], max_side: int
) -> tuple[bytes, np.ndarray]:
    """Example ``index`` of ``split``: (serialized tf.train.Example, pixel sums [3, 3] for the channel statistics).

    Features: ``image`` (JPEG bytes), ``label``, ``id`` (the index) and ``file`` (the path
    relative to SOURCE, so a prediction can name its file).
    """
    file, label = items[split][index]
    try:
        jpeg, pixels = encode(os.path.join(source, file), max_side)
    except BadExample as bad:
        raise BadExample(file, bad.reason) from None
    feature = {
        "image": _feature(jpeg),
        "label": _feature(label),
        "id": _feature(index),
        "file": _feature(file.encode()),
    }
    flat = pixels.reshape(-1, 3).astype(np.float64) / 255.0
    stats = np.stack([flat.sum(0), (flat**2).sum(0), np.full(3, len(flat))])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(), stats
