"""The dataset contract: what a registered dataset declares, and the rest done for it.

A dataset says where its files are per split (:meth:`Dataset.files`), how to read one file
(:meth:`Dataset.read`), how to parse a *batch* of records (:meth:`Dataset.parse`), an
optional per-example :meth:`Dataset.augment`, its :attr:`Dataset.element_spec` and, when
known, its size. A third-party package subclasses :class:`Dataset` and exposes the class
through the ``stoker.datasets`` entry point group; ``ingest.testing`` checks the contract.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from ingest.options import DataOptions
from ingest.sources import tfrecord
from stoker import storage
from stoker.errors import CorruptDataError, DataError

INFO_FILE = "dataset_info.json"


log = logging.getLogger(__name__)


def file_crc32c(path: str | os.PathLike) -> int:
    """CRC32C of a whole file (recorded per shard for formats without per-record checksums)."""
    import google_crc32c

    crc = google_crc32c.Checksum()
    with storage.open_file(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            crc.update(chunk)
    return int.from_bytes(crc.digest(), "big")


class Dataset:
    """Base class of every dataset. Subclasses set :attr:`name` and override what differs.

    The defaults describe a dataset prepared by stoker: TFRecord shards named
    ``<data_dir>/<name>/<split>-NNNNN-of-NNNNN.tfrecord[.gz]`` beside a ``dataset_info.json``
    that records examples and bytes per shard.

    ``data_dir`` may be a URL (``s3://``, ``gs://``): :attr:`root` is then a
    :class:`stoker.storage.Url`, and :meth:`files` trusts only the shards ``dataset_info.json``
    lists (an object store has no atomic folder rename, so prepare writes that file last).
    """

    name: ClassVar[str] = ""
    format: ClassVar[str] = "tfrecord"  # "tfrecord" enables the integrity scan and skip_corrupt
    feature_key: ClassVar[str] = "image"  # the model input
    label_key: ClassVar[str] = "label"
    default_model: ClassVar[str] = ""  # the model trained when MODEL= is not given ('' : shapes_cnn)

    def __init__(self, options: DataOptions | None = None) -> None:
        self.options = options or DataOptions(name=self.name or "unnamed")

    # ---- where the data is --------------------------------------------------------------
    @property
    def root(self) -> Path | storage.Url:
        """The dataset's folder, ``<data_dir>/<name>`` (a ``Url`` when ``data_dir`` is one)."""
        return storage.location(self.options.data_dir) / self.name

    @property
    def info(self) -> dict[str, Any]:
        """The parsed ``dataset_info.json`` ({} when there is none).

        On object storage the parsed file is kept while its size and modification time stay the
        same (one metadata request per call instead of three and a download)."""
        path = self.root / INFO_FILE
        if isinstance(path, storage.Url):
            return self._url_info(path)
        if not path.is_file():
            return {}
        return self._parse_info(path, path.read_text())

    def _url_info(self, path: storage.Url) -> dict[str, Any]:
        version = path.version()
        if version is None:
            return {}
        kept = self.__dict__.get("_url_info_kept")
        if kept is None or kept[0] != version:
            kept = (version, self._parse_info(path, path.read_text()))
            self.__dict__["_url_info_kept"] = kept
        return copy.deepcopy(kept[1])

    def _parse_info(self, path: Path | storage.Url, text: str) -> dict[str, Any]:
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise CorruptDataError(
                f"{path}: not valid JSON ({err}); re-run `make prepare DATASET={self.name}`"
            ) from None

    def is_prepared(self) -> bool:
        """True when ``dataset_info.json`` exists (prepare writes it last, atomically)."""
        return (self.root / INFO_FILE).is_file()

    def stale(self) -> str:
        """Why the prepared files must be prepared again before training ('' when they are current)."""
        return ""

    def mismatch(self) -> str:
        """How prepared files differ from the options (e.g. another size); '' when they agree."""
        return ""

    def files(self, split: str) -> list[str]:
        """Sorted file paths of ``split``; raises :class:`DataError` naming the pattern if none."""
        if storage.is_url(self.options.data_dir):
            return self._listed_files(split)
        if not Path(self.options.data_dir).is_dir():
            raise DataError(
                f"DATA_DIR {self.options.data_dir!r} does not exist; create it or run "
                f"`make prepare DATASET={self.name} DATA_DIR={self.options.data_dir}`"
            )
        pattern = str(self.root / f"{split}-*.tfrecord*")
        found = storage.glob(pattern)
        if not found:
            raise DataError(
                f"no files match {pattern!r} for split {split!r} of dataset {self.name!r}; "
                f"run `make prepare DATASET={self.name} DATA_DIR={self.options.data_dir}`"
            )
        self._check_sizes(split, found)
        for path in found:
            if os.path.getsize(path) == 0 and self.expected_records(path) is None:
                log.warning(
                    "%s is empty and no record count was written for it (no %s entry): it gives no examples; "
                    "remove it or re-create it",
                    path,
                    INFO_FILE,
                )
        return found

    def _listed_files(self, split: str) -> list[str]:
        """Object storage: the shards ``dataset_info.json`` lists, each present with its written size.

        Prepare writes the info file last, after every shard is complete, so a folder without it
        is an unfinished (or interrupted) prepare: nothing in it is read.
        """
        if not self.is_prepared():
            raise DataError(
                f"{self.root / INFO_FILE} does not exist: {self.root} holds no finished prepare (an interrupted "
                f"one leaves shards without it, and they are not read); run `make prepare DATASET={self.name} "
                f"DATA_DIR={self.options.data_dir}`"
            )
        shards = self.info.get("splits", {}).get(split, {}).get("shards")
        if not shards:
            raise DataError(
                f"{self.root / INFO_FILE} lists no shards for split {split!r} of dataset {self.name!r}; "
                f"run `make prepare DATASET={self.name} DATA_DIR={self.options.data_dir}`"
            )
        paths = [str(self.root / s["file"]) for s in shards]
        present = set(storage.glob(str(self.root / f"{split}-*")))
        for path, shard in zip(paths, shards, strict=True):
            if path not in present:
                raise CorruptDataError(
                    f"{path} is listed in {INFO_FILE} but missing: re-run `make prepare DATASET={self.name} "
                    f"DATA_DIR={self.options.data_dir}` (or restore the object)"
                )
            self._check_shard(path, shard, f"`make prepare DATASET={self.name} DATA_DIR={self.options.data_dir}`")
        return sorted(paths)

    def _check_shard(self, path: str, shard: dict, redo: str) -> None:
        """``path`` still has the size and checksum ``dataset_info.json`` recorded for it (else: re-run ``redo``)."""
        if storage.size(path) != shard["bytes"]:
            raise CorruptDataError(
                f"{path} is {storage.size(path)} bytes but was written as {shard['bytes']} bytes: it was "
                f"truncated or overwritten; re-run {redo}"
            )
        if "crc32c" in shard and file_crc32c(path) != shard["crc32c"]:
            raise CorruptDataError(
                f"{path} does not match the checksum recorded when it was written (crc32c): its bytes changed; "
                f"re-run {redo}"
            )

    def _check_sizes(self, split: str, found: list[str]) -> None:
        shards = self.info.get("splits", {}).get(split, {}).get("shards")
        if not shards:
            return
        expected = {s["file"]: s for s in shards}
        names = {os.path.basename(p) for p in found}
        if names != set(expected):
            raise CorruptDataError(
                f"{self.root}: split {split!r} has shards {sorted(names)} but {INFO_FILE} lists "
                f"{sorted(expected)}; re-run `make prepare DATASET={self.name}`"
            )
        for path in found:
            self._check_shard(
                path, expected[os.path.basename(path)], f"`make prepare DATASET={self.name}` (or restore the file)"
            )

    def num_examples(self, split: str) -> int | None:
        """Examples in ``split`` when known (from ``dataset_info.json``)."""
        return self.info.get("splits", {}).get(split, {}).get("num_examples")

    def recorded_examples(self) -> int:
        """Examples in every split, as ``dataset_info.json`` records them (0 for splits it does not count)."""
        return sum(self.num_examples(split) or 0 for split in self.info.get("splits", {}))

    def count_examples(self, split: str) -> int:
        """Host: examples in ``split``: :meth:`num_examples` when known, else counted once and kept.

        A dataset that records no sizes (a plug-in without ``dataset_info.json`` counts) is read
        once, records only (no parse): an epoch is then exactly one pass, not a guessed length."""
        known = self.num_examples(split)
        if known is not None:
            return int(known)
        kept = self.__dict__.setdefault("_counted", {})
        if split not in kept:
            if split in self.__dict__.get("_labels", {}):
                kept[split] = len(self.__dict__["_labels"][split])
            elif (memory := self.in_memory(split)) is not None:
                kept[split] = int(memory.reduce(np.int64(0), lambda n, _: n + 1))
            else:
                kept[split] = sum(self.count_records(path) for path in self.files(split))
            log.info("%s: split %r has %d examples (counted: no size recorded)", self.name, split, kept[split])
        return kept[split]

    def count_records(self, path: str) -> int:
        """Host: records in file ``path``: :meth:`expected_records` when known, else counted once and kept.

        Counted by TensorFlow's reader; a TFRecord file it cannot read through is counted by the
        integrity scan instead (its intact records, what ``pipeline.skip_corrupt`` trains on)."""
        known = self.expected_records(path)
        if known is not None:
            return known
        kept = self.__dict__.setdefault("_counted_files", {})
        if path not in kept:
            try:
                kept[path] = int(self.read(tf.constant(path)).reduce(np.int64(0), lambda n, _: n + 1))
            except tf.errors.DataLossError:
                if self.format != "tfrecord":
                    raise
                kept[path] = tfrecord.scan(path, self.compression).records
        return kept[path]

    def expected_records(self, path: str) -> int | None:
        """Records written into shard ``path`` when known."""
        for split in self.info.get("splits", {}).values():
            for shard in split.get("shards", []):
                if shard["file"] == os.path.basename(path):
                    return shard["num_examples"]
        return None

    # ---- how to read it ------------------------------------------------------------------
    @property
    def compression(self) -> str:
        """TFRecord compression of the files ('' or 'GZIP')."""
        return self.info.get("compression", self.options.compression)

    def read(self, path: tf.Tensor) -> tf.data.Dataset:
        """Records of one file (runs in the tf.data runtime)."""
        return tfrecord.read(path, self.compression)

    reads_batches: ClassVar[bool] = False  # set True where read_batches() is defined

    def read_batches(self, path: tf.Tensor, rows: int) -> tf.data.Dataset:
        """Records of one file in batches of up to ``rows`` (leading dimension), same order as read().

        Formats whose reader produces blocks of rows anyway (Parquet row groups, Arrow record
        batches) hand them to the vectorized parse whole instead of one row at a time.
        """
        raise NotImplementedError(
            f"dataset {self.name!r} reads one record at a time; set reads_batches only with read_batches()"
        )

    def in_memory(self, split: str) -> tf.data.Dataset | None:
        """Records made in memory instead of read from files (synthetic data); None reads files."""
        return None

    def parse(self, records: tf.Tensor) -> dict[str, tf.Tensor]:
        """Parse a batch of records (leading dimension) into a dict of batched tensors."""
        raise NotImplementedError(f"dataset {self.name!r} must define parse(records)")

    def parse_labels(self, records: tf.Tensor) -> tf.Tensor:
        """The labels of a batch of records (override to skip decoding the rest)."""
        return self.parse(records)[self.label_key]

    def labels(self, split: str) -> np.ndarray:
        """Host: the label of every example of ``split`` in canonical order (one read, then kept).

        Class balance and ``train.loss_weights=balanced`` count classes from it; the read goes
        through :meth:`parse_labels`, so a dataset that overrides it decodes no images."""
        kept = self.__dict__.setdefault("_labels", {})
        if split not in kept:
            memory = self.in_memory(split)
            if memory is None:
                memory = tf.data.Dataset.from_tensor_slices(self.files(split)).flat_map(self.read)
            batches = memory.batch(4096).map(self.parse_labels, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            parts = [np.asarray(b, np.int64).reshape(-1) for b in batches.as_numpy_iterator()]
            kept[split] = np.concatenate(parts) if parts else np.zeros([0], np.int64)
        return kept[split]

    @property
    def label_names(self) -> tuple[str, ...]:
        """Class names (``dataset_info.json``'s ``label_names``, else the class numbers)."""
        names = self.info.get("label_names")
        return tuple(names) if names else tuple(str(c) for c in range(self.num_classes))

    def augment(self, example: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per-example training augmentation with stateless ops seeded by ``seed`` (shape [2])."""
        return example

    has_augment: ClassVar[bool] = False  # set True where augment() does work
    # True where preprocess() gives on a batch what it gives on each example of it (element-wise
    # ops): a training stream with nothing to augment then gathers whole batches and preprocesses
    # each once, with no per-example step at all (ingest.positioned). The identity qualifies.
    batch_preprocess: ClassVar[bool] = False

    def preprocess(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Per-example work done for training and evaluation after augmentation (e.g. normalize)."""
        return example

    def preprocesses_batches(self) -> bool:
        """True when :meth:`preprocess` may run on whole batches (:attr:`batch_preprocess`, or none of its own)."""
        return self.batch_preprocess or type(self).preprocess is Dataset.preprocess

    def batch_wise(self) -> bool:
        """True when a training batch can be made with no per-example step: nothing to augment, and
        :meth:`preprocesses_batches`."""
        return not self.has_augment and self.preprocesses_batches()

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        """Spec of one parsed example (before augment)."""
        raise NotImplementedError(f"dataset {self.name!r} must define element_spec")

    @property
    def num_classes(self) -> int:
        """Label classes (from ``dataset_info.json`` when present)."""
        names = self.info.get("label_names")
        if names:
            return len(names)
        raise NotImplementedError(f"dataset {self.name!r} must define num_classes")

    def example_bytes(self) -> int:
        """Bytes of one parsed example, from the element spec (for cache and shuffle budgets)."""
        total = 0
        for spec in self.element_spec.values():
            shape = [d if d is not None else 1 for d in spec.shape.as_list()]
            total += int(np.prod(shape)) * spec.dtype.size
        return total

    # ---- how to serve it (serving/) --------------------------------------------------------
    serves_image_bytes: ClassVar[bool] = False  # True where from_image_bytes() is defined (image datasets)

    def example_features(self) -> dict[str, tf.io.FixedLenFeature] | None:
        """tf.Example features of one record, for datasets whose files do not hold tf.Example records.

        ``None`` (the default): the files' records are serialized tf.Example, and :meth:`parse`
        takes them as they are. A dataset stored otherwise (Parquet rows) returns one feature per
        column :meth:`parse` reads; an exported model's ``serving_default`` signature then parses
        serialized tf.Example records with them before :meth:`parse`, and ``make predict`` writes
        the rows it reads as such records. Give columns a client cannot know (label, id) a default."""
        return None

    def from_image_bytes(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """A parsed batch, as :meth:`parse` gives it, from a batch of encoded images (``[batch]`` string).

        Image datasets define it (and set :attr:`serves_image_bytes`) with the same decode as
        :meth:`parse`, so an exported model's ``image_bytes`` signature serves raw JPEG bytes."""
        raise NotImplementedError(f"dataset {self.name!r} does not take encoded images")

    # ---- how to validate it (ingest.validation) --------------------------------------------
    validates: ClassVar[bool] = False  # True: prepare writes TFDV statistics and a schema; training checks changes
    validation_numeric: ClassVar[tuple[str, ...]] = ()  # numeric model inputs: Jensen-Shannon drift comparators
    validation_ignore: ClassVar[tuple[str, ...]] = ("id",)  # ids, file names, encoded images: no domain, no drift

    def validation_splits(self) -> dict[str, list[str]]:
        """Split -> files that TFDV describes (every prepared split, train first)."""
        names = sorted(self.info.get("splits", {}), key=lambda s: (s != "train", s))
        return {split: self.files(split) for split in names}

    def validation_plan(self) -> Any:
        """What TFDV reads (an ``ingest.validate.Plan``): by default stoker's own shards, TFRecords of
        tf.Example (tfx-bsl's decoder) or Parquet (pyarrow record batches)."""
        import functools

        from ingest import validate

        if self.format == "tfrecord":
            batches = functools.partial(validate.tfrecord_batches, compression=self.compression)
        else:
            batches = validate.parquet_batches
        return validate.Plan(
            splits=self.validation_splits(),
            batches=batches,
            label=self.label_key,
            numeric=self.validation_numeric,
            ignore=self.validation_ignore,
            records=self.recorded_examples(),
        )

    def plan_for_source(self, source: str, workdir: str, *, runner: str = "DirectRunner", beam_args=None) -> Any:
        """The plan of new data from ``source``, prepared into ``workdir`` (``make validate SOURCE=``)."""
        raise DataError(
            f"dataset {self.name!r} is not made from a SOURCE: `make validate DATASET={self.name}` checks its own files"
        )

    # ---- how to make it ------------------------------------------------------------------
    def prepare(self, runner: str = "DirectRunner", beam_args: list[str] | None = None) -> dict[str, Any]:
        """Generate or convert the raw data into files (``make prepare``); none by default."""
        raise DataError(f"dataset {self.name!r} has no prepare step; put its files under {self.root}")
