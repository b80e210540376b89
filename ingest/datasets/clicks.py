"""``clicks``: tabular click logs in Parquet with a learnable signal.

Eight numeric columns ``f0..f7`` and one categorical ``ad`` (0..99); ``label`` is 1 when
``w . f + bias[ad % 10] + noise > 0`` for fixed weights, so a small MLP can learn it.
Read through tensorflow-io (default) or pyarrow (``data.parquet_reader``).
"""

from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from ingest.dataset import INFO_FILE, Dataset, file_crc32c
from ingest.sources import parquet
from stoker import storage
from stoker.errors import DataError

NUMERIC = [f"f{i}" for i in range(8)]
COLUMNS = {**{c: tf.float32 for c in NUMERIC}, "ad": tf.int64, "label": tf.int64, "id": tf.int64}
DEFAULT_SIZES = {"train": 20000, "validation": 4000}
_BUCKETS = 10


def table(split: str, start: int, count: int, seed: int) -> dict[str, np.ndarray]:
    """Rows ``start .. start+count`` of ``split`` (deterministic by seed and row id)."""
    ids = np.arange(start, start + count, dtype=np.int64)
    rng = np.random.default_rng([seed, 7 if split == "train" else 11, start])
    x = rng.normal(size=(count, len(NUMERIC))).astype(np.float32)
    ad = rng.integers(0, 100, count).astype(np.int64)
    w = np.linspace(-1.5, 1.5, len(NUMERIC), dtype=np.float32)
    bias = np.linspace(-1, 1, _BUCKETS, dtype=np.float32)
    logit = x @ w + bias[ad % _BUCKETS] + rng.normal(0, 0.3, count).astype(np.float32)
    out = {c: x[:, i] for i, c in enumerate(NUMERIC)}
    out.update(ad=ad, label=(logit > 0).astype(np.int64), id=ids)
    return out


class Clicks(Dataset):
    """Parquet shards ``<split>-NNNNN.parquet``; parsing stacks columns into one feature vector."""

    name = "clicks"
    format = "parquet"
    validates = True
    validation_numeric = tuple(NUMERIC)  # f0..f7; ad is a category id, id an example id
    feature_key = "features"

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        return {
            "features": tf.TensorSpec([len(NUMERIC) + _BUCKETS], tf.float32),
            "label": tf.TensorSpec([], tf.int64),
            "id": tf.TensorSpec([], tf.int64),
            "ad_bucket": tf.TensorSpec([], tf.int64),  # kept for train.eval_slices=ad_bucket
        }

    @property
    def num_classes(self) -> int:
        return 2

    def _local_only(self) -> None:
        if storage.is_url(self.options.data_dir):
            raise DataError(
                f"clicks (Parquet) reads and writes local files only and DATA_DIR {self.options.data_dir!r} is "
                "object storage; give a local DATA_DIR (shapes and TFRecord datasets take a bucket URL)"
            )

    def files(self, split: str) -> list[str]:
        self._local_only()
        if not Path(self.options.data_dir).is_dir():
            raise DataError(f"DATA_DIR {self.options.data_dir!r} does not exist; run `make prepare DATASET=clicks`")
        pattern = str(self.root / f"{split}-*.parquet")
        found = sorted(glob.glob(pattern))
        if not found:
            raise DataError(
                f"no files match {pattern!r}; run `make prepare DATASET=clicks DATA_DIR={self.options.data_dir}`"
            )
        self._check_sizes(split, found)
        for path in found:
            parquet.check_schema(path, COLUMNS)
        return found

    def read(self, path: tf.Tensor) -> tf.data.Dataset:
        if self.options.parquet_reader == "pyarrow":
            return parquet.read_pyarrow(path, COLUMNS)
        return parquet.read_tfio(path, COLUMNS)

    reads_batches = True

    def read_batches(self, path: tf.Tensor, rows: int) -> tf.data.Dataset:
        if self.options.parquet_reader == "pyarrow":
            return parquet.read_pyarrow(path, COLUMNS, batch_rows=rows, batched=True)
        return parquet.read_tfio(path, COLUMNS, rows=rows)

    def example_features(self) -> dict[str, tf.io.FixedLenFeature]:
        """Serving: one tf.Example feature per Parquet column; label and id default to 0 and -1."""
        defaults = {"label": 0, "id": -1}
        return {c: tf.io.FixedLenFeature([], t, default_value=defaults.get(c)) for c, t in COLUMNS.items()}

    def parse(self, records: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Stack numeric columns and one-hot the ad bucket (vectorized over the batch)."""
        numeric = tf.stack([records[c] for c in NUMERIC], axis=-1)
        ad_bucket = records["ad"] % _BUCKETS
        bucket = tf.one_hot(ad_bucket, _BUCKETS, dtype=tf.float32)
        return {
            "features": tf.concat([numeric, bucket], -1),
            "label": records["label"],
            "id": records["id"],
            "ad_bucket": ad_bucket,
        }

    def prepare(self, runner: str = "DirectRunner", beam_args: list[str] | None = None) -> dict:
        """Write Parquet shards and dataset_info.json (pyarrow; small enough for one process)."""
        self._local_only()
        o = self.options
        partial = self.root.with_name(self.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        shards = o.shards or 4
        splits = {}
        for split, count in {
            "train": o.train_examples or DEFAULT_SIZES["train"],
            "validation": o.eval_examples or DEFAULT_SIZES["validation"],
        }.items():
            bounds = np.linspace(0, count, shards + 1).astype(int)
            entries = []
            for k in range(shards):
                name = f"{split}-{k:05d}-of-{shards:05d}.parquet"
                rows = parquet.write(str(partial / name), table(split, bounds[k], bounds[k + 1] - bounds[k], o.seed))
                entries.append(
                    {
                        "file": name,
                        "num_examples": rows,
                        "bytes": (partial / name).stat().st_size,
                        "crc32c": file_crc32c(partial / name),
                    }
                )
            splits[split] = {"num_examples": count, "shards": entries}
        info = {
            "name": self.name,
            "version": "1.0.0",
            "label_names": ["no_click", "click"],
            "features": {c: t.name for c, t in COLUMNS.items()},
            "seed": o.seed,
            "splits": splits,
        }
        (partial / INFO_FILE).write_text(json.dumps(info, indent=2))
        shutil.rmtree(self.root, ignore_errors=True)
        partial.rename(self.root)
        return info
