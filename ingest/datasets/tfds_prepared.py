"""``DATASET=tfds:NAME[/CONFIG][:VERSION]``: a dataset already prepared by tensorflow-datasets.

Found under ``$TFDS_DATA_DIR`` when it is set, else under ``DATA_DIR``, at
``<dir>/<name>[/<config>]/<version>`` (the newest version folder when none is given) and opened
with ``tfds.builder_from_directory``, which needs no builder class: splits, file lists, record
counts per file and the features come from the folder's own metadata. Records are read by
stoker's pipeline from TFDS's TFRecord files and decoded by TFDS's own feature decoder
(``features.deserialize_example``), so sharding, ordering and resume work as for any dataset.

The model input is the first ``Image`` feature (or ``FEATURE=``), the label the first
``ClassLabel`` (or ``LABEL=``; its names become the class names). Nothing is downloaded here:
``make prepare`` on a dataset that is not there says how to build it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

import tensorflow as tf

from ingest.dataset import Dataset
from ingest.options import DataOptions
from stoker.errors import DataError

PREFIX = "tfds:"
log = logging.getLogger(__name__)
_NAME = re.compile(r"^tfds:(?P<name>[A-Za-z0-9_]+)(?:/(?P<config>[A-Za-z0-9_.-]+))?(?::(?P<version>\d+\.\d+\.\d+))?$")


def _tfds():
    """``tensorflow_datasets``, imported on first use (it is slow to import)."""
    import tensorflow_datasets as tfds

    return tfds


def parse_name(name: str) -> tuple[str, str, str]:
    """``tfds:mnist/config:1.0.0`` -> (``mnist``, ``config``, ``1.0.0``); '' for the parts not given."""
    match = _NAME.match(name)
    if not match:
        raise DataError(f"DATASET={name!r}: expected tfds:NAME[/CONFIG][:VERSION], e.g. tfds:mnist or tfds:mnist:3.0.1")
    return match["name"], match["config"] or "", match["version"] or ""


def _versions(folder: Path) -> list[str]:
    found = [p.name for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"\d+\.\d+\.\d+", p.name)]
    return sorted(found, key=lambda v: tuple(map(int, v.split("."))))


def found(data_dir: str) -> list[str]:
    """``tfds:NAME[/CONFIG]`` of every folder TFDS prepared under ``$TFDS_DATA_DIR`` (else ``data_dir``)."""
    top = Path(os.path.expanduser(os.environ.get("TFDS_DATA_DIR") or data_dir))
    if not top.is_dir():
        return []
    out = []
    for info in sorted(top.glob("*/*/features.json")) + sorted(top.glob("*/*/*/features.json")):
        version = info.parent
        if not re.fullmatch(r"\d+\.\d+\.\d+", version.name) or not (version / "dataset_info.json").is_file():
            continue
        parts = version.parent.relative_to(top).parts
        out.append(PREFIX + "/".join(parts))
    return sorted(set(out))


class TfdsDataset(Dataset):
    """A TFDS-prepared dataset read in place (nothing of stoker's is written beside it)."""

    format = "tfrecord"
    batch_preprocess = True  # element-wise scaling of images, or nothing

    def __init__(self, options: DataOptions | None = None) -> None:
        super().__init__(options)
        self.name = self.options.name
        self.tfds_name, self.config, self.version = parse_name(self.name)

    @property
    def search_dir(self) -> str:
        """``$TFDS_DATA_DIR`` when set, else ``DATA_DIR``."""
        return os.path.expanduser(os.environ.get("TFDS_DATA_DIR") or self.options.data_dir)

    @property
    def root(self) -> Path:
        """``<dir>/<name>[/<config>]/<version>`` (the newest version present when none was asked)."""
        folder = Path(self.search_dir, self.tfds_name, *([self.config] if self.config else []))
        if self.version:
            return folder / self.version
        versions = _versions(folder) if folder.is_dir() else []
        return folder / (versions[-1] if versions else "<version>")

    @property
    def info(self) -> dict[str, Any]:
        return {}  # the folder's dataset_info.json is TFDS's own: read through the builder

    def is_prepared(self) -> bool:
        return (self.root / "dataset_info.json").is_file() and (self.root / "features.json").is_file()

    @functools.cached_property
    def builder(self):
        """TFDS's builder of the prepared folder (raises naming the path searched when there is none)."""
        if not self.is_prepared():
            raise DataError(self._not_prepared())
        return _tfds().builder_from_directory(str(self.root))

    def _not_prepared(self) -> str:
        where = "TFDS_DATA_DIR" if os.environ.get("TFDS_DATA_DIR") else "DATA_DIR (TFDS_DATA_DIR is not set)"
        folder = self.root.parent
        there = _versions(folder) if folder.is_dir() else []
        return (
            (f"versions prepared there: {', '.join(there)} (DATASET=tfds:...:<version>); " if there else "")
            + f"DATASET={self.name}: no dataset prepared by tensorflow-datasets at {self.root} (searched {where}: "
            f"{self.search_dir}). Build it there first, e.g. `tfds build {self.tfds_name}"
            f"{'/' + self.config if self.config else ''} --data_dir={self.search_dir}` (or "
            f"`builder.download_and_prepare()` of your own GeneratorBasedBuilder); stoker downloads nothing"
        )

    def prepare(self, runner: str = "DirectRunner", beam_args: list[str] | None = None) -> dict[str, Any]:
        """Nothing to do when TFDS prepared it; else the error says how to build it (no downloads here)."""
        if not self.is_prepared():
            raise DataError(self._not_prepared())
        log.info("%s is prepared by tensorflow-datasets at %s: nothing to do", self.name, self.root)
        splits = {
            s: {"num_examples": self.num_examples(s), "shards": [{"file": f} for f in self.files(s)]}
            for s in self.builder.info.splits
        }
        return {"name": self.name, "splits": splits}

    # ---- splits and sizes from TFDS's metadata ----------------------------------------------
    def _split(self, split: str):
        splits = self.builder.info.splits
        if split not in splits:
            raise DataError(
                f"DATASET={self.name} has no split {split!r} (it has {', '.join(splits)}); "
                f"set data.train_split= / data.eval_split= to one of them ('' skips evaluation)"
            )
        return splits[split]

    def files(self, split: str) -> list[str]:
        if self.builder.info.file_format.value != "tfrecord":
            raise DataError(
                f"DATASET={self.name} is stored as {self.builder.info.file_format.value}; stoker reads tfrecord"
            )
        return sorted(str(self.root / f) for f in self._split(split).filenames)

    def num_examples(self, split: str) -> int | None:
        return int(self._split(split).num_examples)

    def expected_records(self, path: str) -> int | None:
        for split in self.builder.info.splits.values():
            for name, count in zip(split.filenames, split.shard_lengths, strict=True):
                if name == os.path.basename(path):
                    return int(count)
        return None

    # ---- features ---------------------------------------------------------------------------
    def _first(self, kind: str) -> str:
        features = self.builder.info.features
        return next((k for k, f in features.items() if type(f).__name__ == kind), "")

    @property
    def feature_key(self) -> str:  # type: ignore[override]
        key = self.options.feature or self._first("Image")
        return self._checked("FEATURE", key, "Image")

    @property
    def label_key(self) -> str:  # type: ignore[override]
        key = self.options.label or self._first("ClassLabel")
        return self._checked("LABEL", key, "ClassLabel")

    def _checked(self, make_var: str, key: str, kind: str) -> str:
        features = self.builder.info.features
        if key not in features:
            raise DataError(
                f"DATASET={self.name}: {make_var}={key or '(none: no ' + kind + ' feature)'} is not one of its "
                f"features ({', '.join(features)}); give {make_var}=<feature>"
            )
        return key

    @property
    def label_names(self) -> tuple[str, ...]:
        label = self.builder.info.features[self.label_key]
        return tuple(label.names) if hasattr(label, "names") else tuple(str(c) for c in range(self.num_classes))

    @property
    def num_classes(self) -> int:
        label = self.builder.info.features[self.label_key]
        if not hasattr(label, "num_classes"):
            raise DataError(
                f"DATASET={self.name}: LABEL={self.label_key} is not a ClassLabel; give a ClassLabel feature"
            )
        return int(label.num_classes)

    @property
    def _resize(self) -> bool:
        feature = self.builder.info.features[self.feature_key]
        return type(feature).__name__ == "Image" and None in feature.shape[:2]

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        feature = self.builder.info.features[self.feature_key]
        shape = list(feature.shape)
        if self._resize:
            size = self.options.image_size
            shape = [size, size, shape[2] or 3]
        dtype = tf.uint8 if type(feature).__name__ == "Image" else tf.float32
        out = {self.feature_key: tf.TensorSpec(shape, dtype), self.label_key: tf.TensorSpec([], tf.int64)}
        if "id" in self.builder.info.features and "id" not in out:
            out["id"] = tf.TensorSpec([], tf.int64)
        return out

    @property
    def default_model(self) -> str:  # type: ignore[override]
        return "shapes_cnn" if len(self.element_spec[self.feature_key].shape) == 3 else "clicks_mlp"

    def parse(self, records: tf.Tensor) -> dict[str, tf.Tensor]:
        """A batch of TFDS records decoded by TFDS's feature decoder (images resized when their size varies)."""
        spec = self.element_spec
        features = self.builder.info.features
        resize = self._resize

        def one(record: tf.Tensor) -> dict[str, tf.Tensor]:
            example = features.deserialize_example(record)
            out = {}
            for key, s in spec.items():
                value = example[key]
                if resize and key == self.feature_key:
                    value = tf.image.resize(value, s.shape[:2], antialias=True)
                out[key] = tf.ensure_shape(tf.cast(value, s.dtype), s.shape)
            return out

        return tf.map_fn(one, records, fn_output_signature=spec)

    def parse_labels(self, records: tf.Tensor) -> tf.Tensor:
        """The labels alone: a ClassLabel is stored as one int64 under its key (no image decoded)."""
        return tf.io.parse_example(records, {self.label_key: tf.io.FixedLenFeature([], tf.int64)})[self.label_key]

    def preprocess(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Images: uint8 to float32, scaled to about mean 0, std 1 ((x / 255 - 0.5) / 0.25)."""
        if self.element_spec[self.feature_key].dtype != tf.uint8:
            return example
        image = (tf.cast(example[self.feature_key], tf.float32) / 255.0 - 0.5) / 0.25
        return dict(example, **{self.feature_key: image})
