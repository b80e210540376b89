"""``DATASET=tfrecord SOURCE='path/*.tfrecord*' LABEL=key FEATURE=key``: tf.Example files from another tool.

The files are read where they are. ``prepare`` (no Beam job: nothing is converted) infers the
feature spec from a sample of records (:func:`infer_spec`), then reads every record once with
its CRCs checked, to count the records of each file, check that each has LABEL and FEATURE, and
collect string label names and image sizes. All of it goes into
``<data_dir>/<name>/dataset_info.json``; nothing is written into SOURCE's folder.

Splits: files whose name holds ``train``, ``validation`` / ``val`` / ``valid`` / ``dev`` or
``test`` are those splits (with no validation file, ``test`` is evaluated on). Otherwise the
last files in sorted order are held out for validation, as many as make up about
``data.validation_fraction`` of the records (at least one file; train keeps at least one):
whole files, since records are read in place. One file with no split in its name trains on
all of it with ``data.eval_split=`` (empty), and otherwise says so.
"""

from __future__ import annotations

import collections
import difflib
import io
import json
import logging
import os
import re
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf
from PIL import Image

from ingest.dataset import INFO_FILE
from ingest.datasets import sourced
from ingest.sources import tfrecord
from stoker import files as stoker_files
from stoker.errors import CorruptDataError, DataError

log = logging.getLogger(__name__)
SAMPLE = 500  # records sampled for the spec (the first of each file, round-robin over the files)
_IMAGE_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG": "png"}
_SPLIT_WORDS = {"train": ("train", "training"), "validation": ("validation", "val", "valid", "dev"), "test": ("test",)}


def _image_format(value: bytes) -> str:
    return next((fmt for magic, fmt in _IMAGE_MAGIC.items() if value.startswith(magic)), "")


def infer_spec(records: list[bytes]) -> dict[str, dict[str, Any]]:
    """Per key of a sample of serialized tf.train.Example: kind, length (None: varies) and image format.

    ``{"image": {"kind": "bytes", "length": 1, "image": "jpeg,png"}, "label": {"kind": "int64", ...}}``;
    ``present`` counts the sampled records holding the key. TFDV's ``infer_schema`` (on the
    sample's statistics) replaces this function when the stack moves to TFDV (issue 12).
    """
    spec: dict[str, dict[str, Any]] = {}
    for record in records:
        for key, feature in tf.train.Example.FromString(record).features.feature.items():
            kind = feature.WhichOneof("kind")
            values = getattr(feature, kind).value if kind else []
            kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(kind, "empty")
            entry = spec.setdefault(key, {"kind": kind, "length": len(values), "image": "", "present": 0})
            entry["present"] += 1
            if entry["kind"] == "empty":
                entry["kind"] = kind
            elif kind not in (entry["kind"], "empty"):
                raise DataError(f"tf.Example key {key!r} is {entry['kind']} in some records and {kind} in others")
            if entry["length"] != len(values):
                entry["length"] = None
            formats = {_image_format(v) for v in values} if kind == "bytes" else {""}
            if entry["present"] == 1 or entry["image"]:  # an image key: every value an image (any of the formats)
                known = set(entry["image"].split(",")) if entry["image"] else set()
                entry["image"] = "" if "" in formats or not values else ",".join(sorted(known | formats))
    return spec


def _closest(key: str, spec: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(spec), n=3, cutoff=0.3)
    return (f"did you mean {', '.join(repr(c) for c in close)}? " if close else "") + f"keys: {', '.join(sorted(spec))}"


def split_files(paths: list[str], counts: dict[str, int], fraction: float, eval_split: str) -> dict[str, list[str]]:
    """Files per split: by the words in their names when any has one, else the last files held out."""
    named: dict[str, list[str]] = collections.defaultdict(list)
    for path in paths:
        words = set(re.split(r"[^a-z]+", os.path.basename(path).lower()))
        split = next((s for s, names in _SPLIT_WORDS.items() if words & set(names)), "")
        named[split].append(path)
    if set(named) - {""}:
        if named.get(""):
            raise DataError(
                f"some SOURCE files name a split ({', '.join(sorted(set(named) - {''}))}) and some do not "
                f"({', '.join(os.path.basename(p) for p in named[''][:3])}): name every file's split, or none"
            )
        if "train" not in named:
            raise DataError(f"SOURCE files name splits {sorted(named)} but none is train: name the train files *train*")
        if "validation" not in named and "test" in named:
            log.info("SOURCE has no validation files: evaluating on the test files")
            named["validation"] = named["test"]
        return dict(named)
    if not eval_split:
        return {"train": list(paths)}
    if len(paths) == 1:
        raise DataError(
            f"SOURCE is one file ({paths[0]}) with no split in its name: records are read in place and whole "
            f"files are held out for validation; give two or more files, name them *train* / *validation*, or "
            f"train on all of it without evaluation (SET=data.eval_split=)"
        )
    total, held, cut = sum(counts.values()), 0, len(paths)
    while cut > 1 and (held + counts[paths[cut - 1]]) <= max(fraction * total, counts[paths[-1]]):
        cut -= 1
        held += counts[paths[cut]]
    return {"train": paths[:cut], "validation": paths[cut:]}


@sourced.register_kind
class ForeignTFRecord(sourced.FromSource):
    """tf.Example TFRecord files written by another tool, read in place (counts and spec kept in DATA_DIR)."""

    kind = "tfrecord"
    batch_preprocess = True  # element-wise scaling of images, or nothing
    _source_hint: ClassVar[str] = "'path/*.tfrecord*'"

    def source_files(self) -> list[str]:
        return self.glob_source(("*.tfrecord*", "*.tfrec", "*.tfrecords"))

    # ---- what the info says -----------------------------------------------------------------
    @property
    def label_key(self) -> str:  # type: ignore[override]
        return self.options.label or self.info.get("label", "label")

    @property
    def feature_key(self) -> str:  # type: ignore[override]
        return self.options.feature or self.info.get("feature", "")

    @property
    def spec(self) -> dict[str, dict[str, Any]]:
        return self.info.get("spec", {})

    @property
    def compression(self) -> str:
        return self.info.get("compression", "")

    @property
    def default_model(self) -> str:  # type: ignore[override]
        return "shapes_cnn" if self.spec.get(self.feature_key, {}).get("image") else "clicks_mlp"

    def stale(self) -> str:
        info = self.info
        for key in ("label", "feature"):
            asked = getattr(self.options, key)
            if info and asked and asked != info.get(key):
                return f"{self.root} was prepared with {key.upper()}={info.get(key)}, not {asked}"
        return super().stale()

    def expected_records(self, path: str) -> int | None:
        """Records counted in ``path`` when prepared (by full path: SOURCE folders may repeat names)."""
        for split in self.info.get("splits", {}).values():
            for shard in split.get("shards", []):
                if shard["file"] == path:
                    return shard["num_examples"]
        return None

    def files(self, split: str) -> list[str]:
        """SOURCE's files of ``split`` as counted when prepared, each still of the size it had."""
        if not self.is_prepared():
            raise DataError(
                f"{self.root / INFO_FILE} does not exist: run `make prepare DATASET=tfrecord "
                f"SOURCE={self.options.source or '<glob>'} LABEL=<key> FEATURE=<key>`"
            )
        shards = self.info.get("splits", {}).get(split, {}).get("shards")
        if not shards:
            raise DataError(
                f"dataset {self.name!r} has no {split!r} split (splits: {', '.join(self.info.get('splits', {}))}); "
                f"set data.eval_split= to one of them, or '' to skip evaluation"
            )
        for shard in shards:
            if not os.path.isfile(shard["file"]) or os.path.getsize(shard["file"]) != shard["bytes"]:
                raise CorruptDataError(
                    f"{shard['file']} is missing or changed since it was counted into {self.root / INFO_FILE}; "
                    f"run `make prepare DATASET={self.name}` again"
                )
        return sorted(s["file"] for s in shards)

    @property
    def num_classes(self) -> int:
        return len(self.info["label_names"]) if self.info.get("label_names") else int(self.info["num_classes"])

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        out = {self.label_key: tf.TensorSpec([], tf.int64)}
        out[self.feature_key] = tf.TensorSpec(self._feature_shape(), tf.uint8 if self._image else tf.float32)
        if self._has_id:
            out["id"] = tf.TensorSpec([], tf.int64)
        return out

    @property
    def _image(self) -> dict[str, Any]:
        return self.info.get("image", {})

    @property
    def _has_id(self) -> bool:
        entry = self.spec.get("id", {})
        return "id" not in (self.label_key, self.feature_key) and entry.get("kind") == "int64" and entry["length"] == 1

    def _feature_shape(self) -> list[int]:
        if self._image:
            return list(self._image["shape"])
        return [self.spec[self.feature_key]["length"]]

    # ---- how to read it ---------------------------------------------------------------------
    def _features(self, keys: tuple[str, ...]) -> dict[str, tf.io.FixedLenFeature]:
        dtype = {"bytes": tf.string, "float": tf.float32, "int64": tf.int64}
        out = {}
        for key in keys:
            entry = self.spec[key]
            scalar = key == self.label_key or (key == "id" and self._has_id)
            shape = [] if scalar or entry["image"] else [entry["length"]]
            out[key] = tf.io.FixedLenFeature(shape, dtype[entry["kind"]])
        return out

    def _label_ids(self, raw: tf.Tensor) -> tf.Tensor:
        names = self.info.get("label_names")
        if self.spec[self.label_key]["kind"] != "bytes":
            return tf.cast(raw, tf.int64)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(names), tf.range(len(names), dtype=tf.int64)), -1
        )
        return table.lookup(raw)

    def parse(self, records: tf.Tensor) -> dict[str, tf.Tensor]:
        """Parse a batch of tf.Example records: the label (names to ids), the feature (images decoded)."""
        keys = (self.label_key, self.feature_key) + (("id",) if self._has_id else ())
        ex = tf.io.parse_example(records, self._features(keys))
        out = {self.label_key: self._label_ids(ex[self.label_key])}
        if self._has_id:
            out["id"] = ex["id"]
        value = ex[self.feature_key]
        if self._image:
            shape = self._image["shape"]
            resize = self._image.get("resize", False)

            def decode(b: tf.Tensor) -> tf.Tensor:
                image = tf.io.decode_image(b, channels=shape[-1], expand_animations=False)
                if resize:
                    image = tf.cast(tf.image.resize(image, shape[:2], antialias=True), tf.uint8)
                return tf.ensure_shape(image, shape)

            value = tf.map_fn(decode, value, fn_output_signature=tf.TensorSpec(shape, tf.uint8))
        else:
            value = tf.cast(value, tf.float32)
        out[self.feature_key] = value
        return out

    def parse_labels(self, records: tf.Tensor) -> tf.Tensor:
        ex = tf.io.parse_example(records, self._features((self.label_key,)))
        return self._label_ids(ex[self.label_key])

    def preprocess(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Images: uint8 to float32, scaled to about mean 0, std 1 ((x / 255 - 0.5) / 0.25)."""
        if not self._image:
            return example
        image = (tf.cast(example[self.feature_key], tf.float32) / 255.0 - 0.5) / 0.25
        return dict(example, **{self.feature_key: image})

    # ---- validating it (ingest.validation): statistics at the counting step, into DATA_DIR/<name>/ --
    validates = True

    def validation_plan(self):
        """TFDV reads the user's files in place (tfx-bsl's tf.Example decoder); statistics, schema and the
        record go to ``<data_dir>/<name>/``, never into SOURCE."""
        import dataclasses

        spec, feature = self.spec, self.feature_key
        image = bool(spec.get(feature, {}).get("image"))
        numeric = () if image or spec.get(feature, {}).get("kind") not in ("float", "int64") else (feature,)
        return dataclasses.replace(
            super().validation_plan(),
            int_label=spec.get(self.label_key, {}).get("kind") != "bytes",
            numeric=numeric,
            ignore=("id", feature) if image else ("id",),
        )

    # ---- how to make it (count in place) ----------------------------------------------------
    def prepare(self, runner: str = "DirectRunner", beam_args: list[str] | None = None) -> dict[str, Any]:
        """Infer the spec, count and check every record once, write ``dataset_info.json`` (SOURCE untouched)."""
        paths = [os.path.abspath(p) for p in self.source_files()]
        compression = _compression(paths)
        spec = infer_spec(_sample(paths, compression))
        label, feature = self._keys(spec)
        passed = _Pass(label, feature, spec)
        counts = {path: passed.read(path, compression) for path in paths}
        image = passed.image_info(feature, self.options.image_size) if spec[feature]["image"] else {}
        splits = split_files(paths, counts, self.options.validation_fraction, self.options.eval_split)
        info = {
            "name": self.name,
            "kind": self.kind,
            "source": self.options.source,
            "source_fingerprint": sourced.fingerprint(self.source_files()),
            "label": label,
            "feature": feature,
            "compression": compression,
            "spec": spec,
            "image": image,
            "splits": {
                split: {
                    "num_examples": sum(counts[p] for p in files),
                    "shards": [{"file": p, "num_examples": counts[p], "bytes": os.path.getsize(p)} for p in files],
                }
                for split, files in splits.items()
            },
        }
        info.update(passed.label_info())
        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        stoker_files.write_json_atomic(root / INFO_FILE, json.dumps(info, indent=2, sort_keys=True))
        log.info(
            "%s: %s",
            self.name,
            ", ".join(f"{s} {v['num_examples']} in {len(v['shards'])} files" for s, v in info["splits"].items()),
        )
        return info

    def _keys(self, spec: dict[str, dict[str, Any]]) -> tuple[str, str]:
        """LABEL and FEATURE checked against the sampled keys (the closest keys when one is not there)."""
        recorded = self.info  # DATASET=<name> prepared again (SOURCE changed): the LABEL and FEATURE it was made with
        label = self.options.label or recorded.get("label") or ("label" if "label" in spec else "")
        if not label:
            raise DataError(f"DATASET=tfrecord needs LABEL=<key>: the records have {_closest('label', spec)}")
        images = [k for k, e in spec.items() if e["image"] and k != label]
        feature = self.options.feature or recorded.get("feature") or (images[0] if len(images) == 1 else "")
        if not feature:
            raise DataError(f"DATASET=tfrecord needs FEATURE=<key> (the model input): {_closest('image', spec)}")
        for make_var, key in (("LABEL", label), ("FEATURE", feature)):
            if key not in spec:
                raise DataError(f"{make_var}={key} is not a key of the records: {_closest(key, spec)}")
        entry = spec[label]
        if entry["kind"] == "float" or entry["length"] != 1:
            raise DataError(
                f"LABEL={label} is {entry['kind']} with {entry['length'] or 'a varying number of'} values per record: "
                "a label is one int64 class id or one string per record"
            )
        entry = spec[feature]
        if not entry["image"] and (entry["kind"] == "bytes" or entry["length"] is None):
            raise DataError(
                f"FEATURE={feature} is {entry['kind']} with {entry['length'] or 'a varying number of'} values per "
                "record: stoker feeds an encoded JPEG/PNG image or a fixed-length float/int64 vector"
            )
        return label, feature


def _compression(paths: list[str]) -> str:
    """'GZIP' when the files start with gzip's magic bytes, '' when none does (mixed: an error)."""
    gz = set()
    for path in paths:
        with open(path, "rb") as f:
            gz.add(f.read(2) == b"\x1f\x8b")
    if len(gz) > 1:
        raise DataError("SOURCE mixes GZIP-compressed and plain TFRecord files: give one kind per dataset")
    return "GZIP" if gz == {True} else ""


def _sample(paths: list[str], compression: str) -> list[bytes]:
    """Up to :data:`SAMPLE` records: the first of each file in turn (CRCs checked)."""
    per_file = max(1, SAMPLE // len(paths))
    out: list[bytes] = []
    for path in paths[:SAMPLE]:
        for i, record in enumerate(tfrecord.iter_records(path, compression)):
            if i >= per_file:
                break
            out.append(record)
    if not out:
        raise DataError(f"SOURCE files ({paths[0]}, ...) hold no records")
    return out


class _Pass:
    """The one read of every record at prepare: counts, missing keys, label values and image sizes."""

    def __init__(self, label: str, feature: str, spec: dict[str, dict[str, Any]]) -> None:
        self.label, self.feature, self.spec = label, feature, spec
        self.labels: collections.Counter = collections.Counter()
        self.sizes: collections.Counter = collections.Counter()
        self.modes: collections.Counter = collections.Counter()

    def read(self, path: str, compression: str) -> int:
        result = tfrecord.ScanResult(path)
        count = 0
        for index, record in enumerate(tfrecord.iter_records(path, compression, result)):
            features = tf.train.Example.FromString(record).features.feature
            for key in (self.label, self.feature):
                if key not in features:
                    raise DataError(
                        f"{path}: record {index} has no feature {key!r} (it was in {self.spec[key]['present']} of the "
                        f"sampled records): every record needs LABEL and FEATURE; fix the file or choose other keys"
                    )
            label = features[self.label]
            value = label.bytes_list.value if self.spec[self.label]["kind"] == "bytes" else label.int64_list.value
            self.labels[value[0] if len(value) else None] += 1
            if self.spec[self.feature]["image"]:
                with Image.open(io.BytesIO(features[self.feature].bytes_list.value[0])) as img:
                    self.sizes[(img.height, img.width)] += 1
                    self.modes[img.mode] += 1
            count += 1
        if result.problems:
            raise CorruptDataError(f"{path} is corrupt ({'; '.join(result.problems)}); re-create it or remove it")
        return count

    def label_info(self) -> dict[str, Any]:
        if None in self.labels:
            raise DataError(f"LABEL={self.label} is empty in {self.labels[None]} records: each needs one value")
        if self.spec[self.label]["kind"] == "bytes":
            return {"label_names": sorted(v.decode("utf-8", "replace") for v in self.labels)}
        values = np.array(sorted(self.labels))
        if values.min() < 0:
            raise DataError(f"LABEL={self.label} has negative class ids ({values.min()}): ids must be 0..classes-1")
        return {"num_classes": int(values.max()) + 1}

    def image_info(self, feature: str, image_size: int) -> dict[str, Any]:
        channels = 1 if set(self.modes) <= {"L", "1", "I;16"} else 3
        if len(self.sizes) == 1:
            (h, w), _ = self.sizes.most_common(1)[0]
            return {"shape": [h, w, channels], "resize": False}
        common = ", ".join(f"{h}x{w} ({n})" for (h, w), n in self.sizes.most_common(3))
        log.warning(
            "FEATURE=%s: images of %d sizes (%s, ...): resized to %dx%d (data.image_size)",
            feature,
            len(self.sizes),
            common,
            image_size,
            image_size,
        )
        return {"shape": [image_size, image_size, channels], "resize": True, "sizes": len(self.sizes)}
