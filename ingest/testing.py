"""The public test kit: tiny deterministic data and a contract test for datasets.

A third-party dataset tests itself by subclassing :class:`DatasetContract`::

    class TestMine(DatasetContract):
        dataset_class = Mine
        split_sizes = {"train": 100, "validation": 20}

        @pytest.fixture(scope="class")
        def data_dir(self, tmp_path_factory):
            ...  # write or prepare the files; return the DATA_DIR

Everything here is value = f(index): example ``i`` holds ``id == i`` and ``value == 3 * i``,
so a failing test names the example that went missing or came twice.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import tensorflow as tf

from ingest import pipeline
from ingest.dataset import Dataset
from ingest.options import DataOptions, PipelineOptions
from ingest.sources import tfrecord

_INDEXED = {"id": tf.io.FixedLenFeature([], tf.int64), "value": tf.io.FixedLenFeature([2], tf.float32)}


def indexed_record(i: int) -> bytes:
    """A serialized Example with ``id = i`` and ``value = [3i, -i]``."""
    feature = {
        "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
        "value": tf.train.Feature(float_list=tf.train.FloatList(value=[3.0 * i, -float(i)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_indexed(root: str | Path, split: str, *, files: int, per_file: int, compression: str = "") -> list[str]:
    """Write ``files`` TFRecord shards of ``per_file`` indexed records each; ids are contiguous."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(files):
        name = f"{split}-{f:05d}-of-{files:05d}.tfrecord" + (".gz" if compression else "")
        ids = range(f * per_file, (f + 1) * per_file)
        tfrecord.write(root / name, (indexed_record(i) for i in ids), compression)
        paths.append(str(root / name))
    return paths


class Indexed(Dataset):
    """A dataset of indexed records in ``<data_dir>/indexed/`` (for pipeline tests)."""

    name = "indexed"
    feature_key = "value"

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        return {"id": tf.TensorSpec([], tf.int64), "value": tf.TensorSpec([2], tf.float32)}

    @property
    def num_classes(self) -> int:
        return 2

    def parse(self, records: tf.Tensor) -> dict[str, tf.Tensor]:
        return tf.io.parse_example(records, _INDEXED)


def ids_of(dataset: tf.data.Dataset, key: str = "id") -> list[int]:
    """Every id a (batched) dataset yields, in order."""
    out: list[int] = []
    for batch in dataset:
        out.extend(np.asarray(batch[key]).reshape(-1).tolist())
    return out


def duplicates_and_missing(ids: list[int], expected: range) -> tuple[list[int], list[int]]:
    """(ids seen more than once, ids of ``expected`` never seen)."""
    counts = collections.Counter(ids)
    return sorted(i for i, c in counts.items() if c > 1), sorted(set(expected) - set(counts))


def _examples(batches: list[dict[str, tf.Tensor]]) -> list[tuple[bytes, ...]]:
    """Every example of ``batches`` as the bytes of its features, sorted (order-free comparison)."""
    out = []
    for batch in batches:
        arrays = {k: np.asarray(v) for k, v in batch.items()}
        for i in range(len(next(iter(arrays.values())))):
            out.append(tuple(arrays[k][i].tobytes() for k in sorted(arrays)))
    return sorted(out)


class DatasetContract:
    """Contract tests every dataset should pass; subclass and set the class attributes.

    Attributes:
        dataset_class: the Dataset subclass under test.
        split_sizes: expected examples per split.
        options: extra DataOptions fields (e.g. image_size).
    """

    dataset_class: ClassVar[type[Dataset]]
    split_sizes: ClassVar[dict[str, int]]
    options: ClassVar[dict[str, Any]] = {}

    @pytest.fixture(scope="class")
    def data_dir(self) -> str:
        raise NotImplementedError("override the data_dir fixture: prepare or write the files, return DATA_DIR")

    @pytest.fixture(scope="class")
    def dataset(self, data_dir: str) -> Dataset:
        return self.dataset_class(DataOptions(name=self.dataset_class.name, data_dir=data_dir, **self.options))

    def _one_pass(self, dataset: Dataset, split: str, preset: str = "optimized", batch: int = 16) -> tf.data.Dataset:
        opts = PipelineOptions(preset=preset, cache=False)
        return pipeline.build(dataset, split, opts, batch_size=batch, training=False, repeat=False).dataset

    def test_has_a_name(self, dataset: Dataset) -> None:
        assert dataset.name, "set the class attribute `name` (what users pass as DATASET=)"

    def test_split_sizes(self, dataset: Dataset) -> None:
        for split, size in self.split_sizes.items():
            seen = sum(int(np.asarray(b[dataset.label_key]).shape[0]) for b in self._one_pass(dataset, split))
            assert seen == size, f"split {split!r}: read {seen} examples, expected {size}"

    def test_vectorized_parse_equals_per_record_parse(self, dataset: Dataset) -> None:
        split = next(iter(self.split_sizes))
        a = list(self._one_pass(dataset, split, "naive"))
        opts = PipelineOptions(preset="naive", vectorize=True)
        b = list(pipeline.build(dataset, split, opts, batch_size=16, training=False, repeat=False).dataset)
        assert len(a) == len(b)
        if dataset.reads_batches:
            # Whole blocks of rows are interleaved, so the order differs; the examples may not.
            assert _examples(a) == _examples(b), "vectorized parse of read_batches() gave other examples"
            return
        for x, y in zip(a, b):
            for key in x:
                np.testing.assert_allclose(np.asarray(x[key]), np.asarray(y[key]), err_msg=f"feature {key!r}")

    def test_batched_read_equals_row_read(self, dataset: Dataset) -> None:
        if not dataset.reads_batches:  # then read_batches must not be half-defined either
            with pytest.raises(NotImplementedError, match="reads one record at a time"):
                dataset.read_batches(tf.constant(""), 7)
            return
        path = dataset.files(next(iter(self.split_sizes)))[0]
        rows = list(dataset.read(path).batch(1_000_000))
        blocks = list(dataset.read_batches(path, 7))
        assert blocks and all(tf.nest.flatten(b)[0].shape[0] <= 7 for b in blocks), "blocks must hold <= rows records"
        joined = tf.nest.map_structure(lambda *parts: tf.concat(parts, 0), *blocks)
        tf.nest.map_structure(np.testing.assert_array_equal, rows[0], joined)

    def _parsed(self, dataset: Dataset, split: str) -> dict[str, tf.Tensor]:
        memory = dataset.in_memory(split)
        records = memory if memory is not None else dataset.read(dataset.files(split)[0])
        batch = dataset.parse(next(iter(records.batch(2))))
        return {k: v[0] for k, v in batch.items()}

    def test_parse_gives_the_element_spec(self, dataset: Dataset) -> None:
        example = self._parsed(dataset, next(iter(self.split_sizes)))
        for key, spec in dataset.element_spec.items():
            assert spec.is_compatible_with(example[key]), f"{key!r}: parsed {example[key]!r}, declared {spec}"

    def test_augment_keeps_the_spec(self, dataset: Dataset) -> None:
        example = self._parsed(dataset, next(iter(self.split_sizes)))
        out = dataset.augment(example, tf.constant([1, 2], tf.int64))
        for key, value in example.items():
            assert out[key].shape == value.shape and out[key].dtype == value.dtype, f"augment changed {key!r}"

    def test_batch_preprocess_equals_per_example_preprocess(self, dataset: Dataset) -> None:
        if not dataset.batch_preprocess:  # preprocess runs per example: nothing to compare
            return
        split = next(iter(self.split_sizes))
        memory = dataset.in_memory(split)
        records = memory if memory is not None else dataset.read(dataset.files(split)[0])
        batch = dataset.parse(next(iter(records.batch(5))))
        whole = dataset.preprocess(batch)
        for i in range(int(tf.nest.flatten(batch)[0].shape[0])):
            one = dataset.preprocess({k: v[i] for k, v in batch.items()})
            for key, value in one.items():
                np.testing.assert_allclose(
                    np.asarray(whole[key][i]), np.asarray(value), err_msg=f"batch_preprocess: {key!r} of example {i}"
                )


# ---- an image folder (DATASET=images) -----------------------------------------------------
_HUES = ((230, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40), (200, 50, 210))


def image_folder_pixels(index: int, classes: int) -> tuple[np.ndarray, int]:
    """Image ``index`` of a synthetic image folder: uint8 [h, w, 3] of 32-48 px a side, and its class.

    Class ``index % classes``: a background hue (one of five) with noise, and a bright disc or a
    dark bar (classes 5-9 swap which): tellable apart from any crop of a few pixels.
    """
    from PIL import Image, ImageDraw

    label = index % classes
    rng = np.random.default_rng([classes, index])
    h, w = (int(v) for v in rng.integers(32, 49, 2))
    base = np.array(_HUES[label % len(_HUES)], np.float64)
    pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    pen = ImageDraw.Draw(image)
    if label // len(_HUES) % 2:
        pen.rectangle([0, h // 3, w, 2 * h // 3], fill=(20, 20, 20))
    else:
        pen.ellipse([w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=(250, 250, 250))
    return np.asarray(image), label


def write_image_folder(
    root: str | Path, *, classes: int = 10, per_class: int = 30, corrupt: int = 0
) -> dict[str, list[str]]:
    """``root/class_<c>/<i>.jpg|png`` (JPEG and PNG alternating), plus ``corrupt`` files that are not
    images (``class_<c>/broken-<k>.jpg``); returns ``{"images": paths, "corrupt": paths}`` relative to root."""
    from PIL import Image

    root = Path(root)
    written: dict[str, list[str]] = {"images": [], "corrupt": []}
    for i in range(classes * per_class):
        pixels, label = image_folder_pixels(i, classes)
        rel = f"class_{label}/{i:05d}." + ("png" if i // classes % 2 else "jpg")  # both kinds in every class
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / rel, quality=92)
        written["images"].append(rel)
    for k in range(corrupt):
        rel = f"class_{k % classes}/broken-{k}.jpg"
        (root / rel).write_bytes(b"not an image " * (k + 1))
        written["corrupt"].append(rel)
    return written
