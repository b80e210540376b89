"""``DATASET=a+b``: several registered datasets with one element spec, as one dataset.

The sources are read and parsed each by its own functions and held as one table in canonical
order (source after source), with an int64 ``_source`` feature saying which source each example
came from (``train.eval_slices=_source`` reports metrics per source). Augmentation and
preprocessing stay each source's own (a ``switch_case`` on ``_source``), so a source normalized
with its own statistics keeps them. ``data.weights`` gives each source's share of the training
stream (``ingest.resample.mix``); without it the sources are concatenated and shuffled.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from ingest.dataset import Dataset
from ingest.options import DataOptions
from stoker.errors import DataError

SOURCE = "_source"


class Mixed(Dataset):
    """The sources' examples one after another, each parsed, augmented and preprocessed as its own."""

    format = "memory"

    def __init__(self, options: DataOptions, sources: list[Dataset]) -> None:
        super().__init__(options)
        self.name = options.name  # type: ignore[misc]  # "a+b": an instance, not a registered class
        self.sources = sources
        first = sources[0]
        self.feature_key, self.label_key = first.feature_key, first.label_key  # type: ignore[misc]
        self.has_augment = any(s.has_augment for s in sources)  # type: ignore[misc]
        self._check_alike()

    def _check_alike(self) -> None:
        first = self.sources[0]
        want = first.element_spec
        for other in self.sources[1:]:
            have = other.element_spec
            for key in sorted(set(want) | set(have)):
                a, b = want.get(key), have.get(key)
                if a is None or b is None or a.dtype != b.dtype or a.shape != b.shape:
                    raise DataError(
                        f"DATASET={self.name}: feature {key!r} is {_spec(a)} in {first.name} but {_spec(b)} in "
                        f"{other.name}; mixed datasets need one element spec (same features, dtypes and shapes)"
                    )
            if (other.feature_key, other.label_key) != (first.feature_key, first.label_key):
                raise DataError(f"DATASET={self.name}: {other.name} trains on other feature or label keys")
            if other.num_classes != first.num_classes:
                raise DataError(
                    f"DATASET={self.name}: {first.name} has {first.num_classes} classes, {other.name} "
                    f"{other.num_classes}; mixed datasets need one label space"
                )

    # ---- what it is ------------------------------------------------------------------------
    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        return {**self.sources[0].element_spec, SOURCE: tf.TensorSpec([], tf.int64)}

    @property
    def num_classes(self) -> int:
        return self.sources[0].num_classes

    @property
    def info(self) -> dict[str, Any]:
        named = [s for s in self.sources if s.info.get("label_names")] or self.sources  # e.g. synthetic has none
        return {"label_names": list(named[0].label_names), "sources": [s.name for s in self.sources]}

    def is_prepared(self) -> bool:
        return all(s.is_prepared() for s in self.sources)

    def mismatch(self) -> str:
        return "; ".join(f"{s.name}: {m}" for s in self.sources if (m := s.mismatch()))

    def prepare(self, runner: str = "DirectRunner", beam_args: list[str] | None = None) -> dict[str, Any]:
        """Prepare every source that is not prepared yet."""
        return {s.name: s.prepare(runner, beam_args) for s in self.sources if not s.is_prepared()}

    def files(self, split: str) -> list[str]:
        return [f for s in self.sources for f in s.files(split)]

    def num_examples(self, split: str) -> int | None:
        return int(sum(self.source_sizes(split)))

    def source_sizes(self, split: str) -> tuple[int, ...]:
        """Examples of ``split`` in each source (from its dataset_info.json, else counted)."""
        return tuple(int(s.num_examples(split) or len(s.labels(split))) for s in self.sources)

    def labels(self, split: str) -> np.ndarray:
        return np.concatenate([s.labels(split) for s in self.sources])

    # ---- how to read it ----------------------------------------------------------------------
    def in_memory(self, split: str) -> tf.data.Dataset:
        """Every source's parsed examples, source after source, each tagged with its index."""
        mixed = None
        for k, source in enumerate(self.sources):
            records = source.in_memory(split)
            if records is None:
                records = tf.data.Dataset.from_tensor_slices(source.files(split)).flat_map(source.read)
            parsed = records.batch(256).map(source.parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            parsed = parsed.unbatch().map(lambda ex, k=k: {**ex, SOURCE: tf.constant(k, tf.int64)})
            mixed = parsed if mixed is None else mixed.concatenate(parsed)
        return mixed

    def parse(self, records: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return records  # in_memory parsed them with each source's own parse

    def parse_labels(self, records: dict[str, tf.Tensor]) -> tf.Tensor:
        return records[self.label_key]

    def augment(self, example: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._per_source(example, lambda s, ex: s.augment(ex, seed) if s.has_augment else ex)

    def preprocess(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return self._per_source(example, lambda s, ex: s.preprocess(ex))

    def _per_source(self, example, fn) -> dict[str, tf.Tensor]:
        """``fn(source, example)`` of the example's own source (one branch per source)."""
        branches = [lambda s=s: fn(s, example) for s in self.sources]
        return tf.switch_case(tf.cast(example[SOURCE], tf.int32), branches)


def _spec(spec: tf.TensorSpec | None) -> str:
    return "missing" if spec is None else f"{spec.dtype.name} {spec.shape.as_list()}"


def make(options: DataOptions, get_class) -> Mixed:
    """``a+b+...`` from the registry (``get_class(name)``); each source gets the same data options."""
    names = options.name.split("+")
    if any(not n for n in names) or len(names) < 2:
        raise DataError(f"DATASET={options.name}: give two or more registered names joined by '+'")
    if len(set(names)) != len(names):
        raise DataError(f"DATASET={options.name} names a dataset twice; give data.weights to weight one more")
    sources = [get_class(n)(dataclasses.replace(options, name=n, weights=())) for n in names]
    return Mixed(options, sources)
