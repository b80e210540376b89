"""``DATASET=table SOURCE='path/*.csv' LABEL=column``: CSV or Parquet files, with no code.

Prepared once by a Beam job (``ingest.prepare.table_job``) into ``<data_dir>/<name>/``:
Parquet shards whose columns are already standardized numbers (``x<i>``, float32) and string
ids (``c<j>``, int64), beside ``dataset_info.json`` (types, statistics, vocabularies, missing
counts, label names, counts per split and shard). Reading is the ``clicks`` way: row groups
handed whole to a vectorized parse that stacks the numbers and one-hots the ids into one
feature vector; the ids stay in the example as ``categorical`` for models that embed them.
What each column becomes is in ``ingest.prepare.table_stats``.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import ClassVar

import tensorflow as tf

from ingest.datasets import sourced
from ingest.datasets.sourced import FromSource
from ingest.sources import parquet
from stoker import storage
from stoker.errors import DataError

PATTERNS = ("*.csv", "*.parquet")


@sourced.register_kind
class Table(FromSource):
    """CSV or Parquet rows: numbers standardized, text one-hot over a vocabulary (DATASET=table)."""

    kind: ClassVar[str] = "table"
    format: ClassVar[str] = "parquet"
    feature_key: ClassVar[str] = "features"
    default_model: ClassVar[str] = "clicks_mlp"
    _source_hint: ClassVar[str] = "'path/*.csv' or *.parquet, one file, or a folder of them"
    reads_batches: ClassVar[bool] = True

    def source_files(self) -> list[str]:
        return self.glob_source(PATTERNS)

    # ---- what was prepared ---------------------------------------------------------------
    def _features(self) -> dict:
        features = self.info.get("features")
        if not features:
            raise DataError(
                f"{self.root} holds no prepared table; run `make prepare DATASET=table SOURCE=<files> LABEL=<column>`"
            )
        return features

    @property
    def _columns(self) -> dict[str, tf.DType]:
        f = self._features()
        stored = {name: tf.float32 for name in f["numeric"]}
        stored.update({name: tf.int64 for name in f["categorical"]})
        return {**stored, "label": tf.int64, "id": tf.int64}

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        f = self._features()
        spec = {
            "features": tf.TensorSpec([self.info["feature_width"]], tf.float32),
            "label": tf.TensorSpec([], tf.int64),
            "id": tf.TensorSpec([], tf.int64),
        }
        if f["categorical"]:
            spec["categorical"] = tf.TensorSpec([len(f["categorical"])], tf.int64)
        return spec

    def stale(self) -> str:
        """Also stale when LABEL (or, from SOURCE, the vocabulary size or held-out share) differs."""
        why = super().stale()
        info = self.info
        if why or not info:
            return why
        o = self.options
        if o.label and o.label != info.get("label"):
            return f"LABEL={o.label} but {self.root} was prepared with LABEL={info.get('label')}"
        if o.name == self.kind:  # settings given with SOURCE: the folder must have been made with them
            for key in ("vocab_size", "validation_fraction", "seed"):
                if info.get(key) != getattr(o, key):
                    return f"data.{key}={getattr(o, key)} but {self.root} was prepared with {info.get(key)}"
        return ""

    # ---- reading -------------------------------------------------------------------------
    def _local_only(self) -> None:
        if storage.is_url(self.options.data_dir) or storage.is_url(self.source):
            raise DataError(
                "DATASET=table reads and writes local files only; give a local DATA_DIR and SOURCE "
                f"(got DATA_DIR={self.options.data_dir!r}, SOURCE={self.options.source!r})"
            )

    def files(self, split: str) -> list[str]:
        self._local_only()
        pattern = str(self.root / f"{split}-*.parquet")
        found = sorted(glob.glob(pattern))
        if not found:
            raise DataError(
                f"no files match {pattern!r}; run `make prepare DATASET=table SOURCE={self.options.source or '...'} "
                f"LABEL={self.options.label or '<column>'} DATA_DIR={self.options.data_dir}`"
            )
        self._check_sizes(split, found)
        columns = self._columns
        for path in found:
            parquet.check_schema(path, columns)
        return found

    def read(self, path: tf.Tensor) -> tf.data.Dataset:
        if self.options.parquet_reader == "pyarrow":
            return parquet.read_pyarrow(path, self._columns)
        return parquet.read_tfio(path, self._columns)

    def read_batches(self, path: tf.Tensor, rows: int) -> tf.data.Dataset:
        if self.options.parquet_reader == "pyarrow":
            return parquet.read_pyarrow(path, self._columns, batch_rows=rows, batched=True)
        return parquet.read_tfio(path, self._columns, rows=rows)

    def parse(self, records: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Stack the standardized numbers and one-hot each string id (vectorized over the batch)."""
        f = self._features()
        parts = []
        if f["numeric"]:
            parts.append(tf.stack([records[name] for name in f["numeric"]], axis=-1))
        for name, (_, width) in f["categorical"].items():
            parts.append(tf.one_hot(records[name], width, dtype=tf.float32))
        out = {"features": tf.concat(parts, -1), "label": records["label"], "id": records["id"]}
        if f["categorical"]:
            out["categorical"] = tf.stack([records[name] for name in f["categorical"]], axis=-1)
        return out

    def parse_labels(self, records: dict[str, tf.Tensor]) -> tf.Tensor:
        return records["label"]

    # ---- validating it (ingest.validation) ------------------------------------------------
    validates: ClassVar[bool] = True

    def validation_plan(self, paths: list[str] | None = None):
        """TFDV reads the source rows (``ingest.prepare.table_arrow``): the columns by their own names.

        ``paths`` (new data) are read with this dataset's column types; they are one set ("check").
        """
        import functools

        from ingest import validate
        from ingest.prepare import table_arrow

        info = self.info
        columns = info.get("columns") or self._features()
        types = {name: c["type"] for name, c in columns.items()}
        label_int = info.get("label_kind") == "int"
        batches = functools.partial(
            table_arrow.batches,
            types=types,
            label=info["label"],
            label_int=label_int,
            fraction=info.get("validation_fraction", self.options.validation_fraction),
            seed=info.get("seed", self.options.seed),
        )
        ids = tuple(n for n in columns if table_arrow.ID_LIKE.search(n))
        numeric = tuple(n for n, c in columns.items() if c.get("role") == "numeric" and n not in ids)
        files = paths if paths is not None else self.source_files()
        splits = {"check": files} if paths is not None else {"train": files, "validation": files}
        return validate.Plan(
            splits=splits,
            batches=batches,
            label=info["label"],
            int_label=label_int,
            numeric=numeric,
            ignore=ids,
            records=self.recorded_examples(),
        )

    def plan_for_source(self, source: str, workdir: str, *, runner: str = "DirectRunner", beam_args=None):
        """New rows are read as the prepare reads them, typed as this dataset's columns (no shards needed:
        TFDV describes source rows)."""
        import dataclasses

        other = Table(dataclasses.replace(self.options, name=self.kind, source=source, prepared_name=self.name))
        return self.validation_plan(other.source_files())

    # ---- making it -----------------------------------------------------------------------
    def prepare(self, runner: str = "DirectRunner", beam_args: list[str] | None = None) -> dict:
        """Read SOURCE, compute the train statistics and write the shards (a Beam job)."""
        import dataclasses

        from ingest.prepare import table_job

        self._local_only()
        paths = self.source_files()
        options = self.options
        if not options.label and self.info.get("label"):  # DATASET=<name> after SOURCE changed: same LABEL
            options = dataclasses.replace(options, label=self.info["label"])
        info = {
            "name": self.name,
            "kind": self.kind,
            "version": "1.0.0",
            "source": self.options.source,
            "source_fingerprint": sourced.fingerprint(paths),
            "source_files": len(paths),
            "seed": options.seed,
            "validation_fraction": options.validation_fraction,
            "vocab_size": options.vocab_size,
        }
        return table_job.run(Path(self.root), paths, options=options, info=info, runner=runner, beam_args=beam_args)
