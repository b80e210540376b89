"""Options of the data section and the pipeline section of a run config.

Every tf.data optimization is one switch of :class:`PipelineOptions`. A field left at
``None`` takes its value from the preset (``naive``: every optimization off;
``optimized``: every one on, AUTOTUNE), so both presets are the same code with other values.
``auto`` starts from ``optimized`` and lets ``ingest.autotune`` choose, on this machine, each of
:data:`TUNED` the config leaves unset.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

AUTOTUNE = -1  # Spelled -1 in configs, as tf.data.AUTOTUNE is.

PRESETS: dict[str, dict[str, object]] = {
    "naive": dict(
        interleave=False,
        read_parallelism=1,
        vectorize=False,
        map_parallelism=1,
        cache=False,
        prefetch=False,
        prefetch_buffer=AUTOTUNE,
        deterministic=True,
        private_threadpool=0,
        map_fusion=False,
        engine="tfdata",
        parse_batch=256,
        cache_form="decoded",
    ),
    "optimized": dict(
        interleave=True,
        read_parallelism=AUTOTUNE,
        vectorize=True,
        map_parallelism=AUTOTUNE,
        cache=True,
        # deterministic stays on: with it off, parallel stages reorder elements across the epoch
        # boundary and a restored iterator lost or repeated examples (5 of 6 trials, TF 2.16), which
        # breaks exact mid-epoch resume. SET=pipeline.deterministic=false trades that for speed.
        prefetch=True,
        prefetch_buffer=AUTOTUNE,
        deterministic=True,
        private_threadpool=0,
        map_fusion=True,
        engine="tfdata",
        parse_batch=256,
        cache_form="decoded",
    ),
}
# DALI decodes and augments in its own pipeline; the tf.data part around it stays optimized.
PRESETS["dali"] = dict(PRESETS["optimized"], engine="dali")
# PIPELINE=auto: optimized until ingest.autotune has measured what this machine does best.
PRESETS["auto"] = dict(PRESETS["optimized"])
# The knobs PIPELINE=auto chooses (each one the config leaves unset).
TUNED = ("cache", "cache_form", "map_parallelism", "parse_batch", "prefetch_buffer", "private_threadpool")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataOptions:
    """Which dataset, where it lives, and how it is made (``make prepare``)."""

    name: str = "shapes"  # registered dataset name (`make datasets` lists them)
    data_dir: str = "data"  # root holding <data_dir>/<name>/ (TFRecord shards + dataset_info.json); or s3://, gs://
    train_split: str = "train"  # split trained on
    eval_split: str = "validation"  # split evaluated on ('' to skip evaluation)
    shuffle_buffer: int = 4096  # examples held by the shuffle stage
    seed: int = 0  # seeds file order, shuffle, augmentation and generation
    image_size: int = 64  # side of generated images (shapes); benchmarks use 256
    train_examples: int = 0  # examples to generate for train (0: the dataset's default)
    eval_examples: int = 0  # examples to generate for validation (0: the dataset's default)
    shards: int = 0  # TFRecord shards per split written by prepare (0: the dataset's default)
    compression: Literal["", "GZIP"] = ""  # TFRecord compression written by prepare
    parquet_reader: Literal["tfio", "pyarrow"] = "tfio"  # Parquet through tensorflow-io or pyarrow
    balance: Literal["none", "uniform"] = "none"  # uniform: resample training to equal class frequencies
    class_weights: tuple[float, ...] = ()  # resample training to these class frequencies (normalized)
    weights: tuple[float, ...] = ()  # DATASET=a+b: each source's share of the mixed stream
    class_fractions: tuple[float, ...] = ()  # shapes: class frequencies generated (() is uniform)
    # Your own data (DATASET=images|table|tfrecord SOURCE=...): prepared into <data_dir>/<folder name>/
    source: str = ""  # SOURCE=: an image folder, a glob of CSV/Parquet files or of TFRecord files
    prepared_name: str = ""  # NAME=: the prepared dataset's name ('' : SOURCE's folder or file stem)
    label: str = ""  # LABEL=: the label column (table) or tf.Example key (tfrecord)
    feature: str = ""  # FEATURE=: the model-input tf.Example key (tfrecord)
    validation_fraction: float = 0.1  # share of SOURCE held out (seeded) when it has no validation split
    max_side: int = 0  # images: shrink so the longer side is at most this when preparing (0: keep)
    # images: decode the random crop's window at 1/2, 1/4 or 1/8 DCT scale where it is that many times
    # image_size on both sides (faster on photos larger than the crop; pixels differ slightly, see
    # docs/performance.md); evaluation's center crop always decodes at full scale
    scaled_decode: bool = False
    skip_bad_files: bool = False  # skip undecodable files or rows when preparing (counted, listed in the info)
    vocab_size: int = 1000  # table: most frequent values kept per string column (others: one OOV bucket)
    # error: data changed since it was last validated is checked against schema.pbtxt before step 1,
    # and a bad file stops the run; warn: logged; off: not checked (ingest/validation.py)
    validate: Literal["error", "warn", "off"] = "error"

    def __post_init__(self) -> None:
        for key in ("shuffle_buffer", "train_examples", "eval_examples", "shards", "image_size"):
            if getattr(self, key) < 0:
                raise ValueError(f"data.{key}={getattr(self, key)} must be >= 0")
        if self.image_size and self.image_size < 16:
            raise ValueError(f"data.image_size={self.image_size} is too small to draw shapes on; use >= 16")
        if not self.name:
            raise ValueError("data.name is empty: give DATASET=<name> (`make datasets` lists them)")
        for key in ("class_weights", "weights", "class_fractions"):
            values = getattr(self, key)
            if values and (min(values) < 0 or sum(values) <= 0):
                raise ValueError(f"data.{key}={','.join(map(str, values))}: give non-negative numbers, not all 0")
        if self.balance != "none" and self.class_weights:
            raise ValueError("data.balance and data.class_weights both set: give one target class distribution")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"data.validation_fraction={self.validation_fraction} must be within [0, 1)")
        if self.max_side < 0 or self.vocab_size < 1:
            raise ValueError("data.max_side must be >= 0 and data.vocab_size >= 1")
        if self.weights and "+" not in self.name:
            raise ValueError(f"data.weights is for mixed datasets (DATASET=a+b); {self.name!r} is one dataset")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineOptions:
    """The tf.data stages and their switches (``None``: from ``preset``)."""

    preset: Literal["naive", "optimized", "dali", "auto"] = "optimized"  # PIPELINE=
    engine: Literal["tfdata", "dali"] | None = None  # who builds the pipeline (PIPELINE=dali: dali)
    interleave: bool | None = None  # read files in parallel (parallel interleave)
    cycle_length: int = 4  # files read at once; pinned so order is reproducible across machines
    block_length: int = 1  # consecutive records taken from one file
    read_parallelism: int | None = None  # interleave threads (-1 AUTOTUNE)
    vectorize: bool | None = None  # parse a batch of records per call instead of one record
    parse_batch: int | None = None  # records per vectorized parse call (256)
    map_parallelism: int | None = None  # parallel calls of parse and augment (-1 AUTOTUNE)
    cache: bool | None = None  # cache parsed examples (before shuffle and augmentation)
    cache_path: str = ""  # '' caches in memory, else a file prefix on disk (or in a bucket: s3://...)
    cache_form: Literal["decoded", "encoded"] | None = (
        None  # memory cache of parsed values, or of the records (parsed each epoch; by input position only)
    )
    cache_budget_mb: float = 8192  # refuse a memory cache larger than this, MiB (estimated from the split)
    shuffle: bool | Literal["global"] = True  # shuffle training examples: a window of data.shuffle_buffer, or global
    order_cycle: int = 64  # files the window order reads round-robin together (at most the split's files)
    iterator_checkpoint: bool = False  # checkpoint TensorFlow's iterator state instead of the input position
    prefetch: bool | None = None  # overlap input with compute (host prefetch at the end)
    prefetch_buffer: int | None = None  # batches prefetched (-1 AUTOTUNE)
    device_prefetch: bool = False  # also prefetch onto the accelerator (GPU only)
    deterministic: bool | None = None  # keep element order under parallelism
    private_threadpool: int | None = None  # threads of a private pool (0: the shared pool)
    map_fusion: bool | None = None  # let tf.data fuse consecutive maps (augment + preprocess) into one
    autotune_cpu_budget: int = 0  # cores AUTOTUNE may use (0: all)
    autotune_ram_budget_mb: int = 0  # RAM AUTOTUNE buffers may use (0: half of RAM)
    verify_framing: bool = True  # walk TFRecord headers before reading (a crafted length crashes TF)
    skip_corrupt: bool = False  # skip corrupt TFRecord records instead of failing (counted)
    max_corrupt: int = 100  # with skip_corrupt: fail when more records than this are bad
    data_service: str = ""  # grpc://host:port of a tf.data service dispatcher ('' runs locally)
    service_mode: Literal["dynamic", "off"] = "dynamic"  # tf.data service processing mode
    service_timeout_s: float = 60.0  # fail when the service gives no element for this long
    # dynamic mode: every example of an epoch once even when a worker dies (ids kept, the missing part
    # read locally; ingest/service_once.py; 0.67-0.87 of at-most-once's examples/s measured here);
    # false: TensorFlow's at-most-once and iterator checkpoints
    service_exactly_once: bool = True
    auto_budget_s: float = 0.0  # PIPELINE=auto: seconds it may measure (0: min(30 s, 10% of the run's input time))
    auto_tunes: tuple[str, ...] | None = None  # PIPELINE=auto: the knobs of TUNED it chooses (those left unset)

    def __post_init__(self) -> None:
        if self.auto_tunes is None:  # once, before the preset fills them in (replace() keeps it)
            unset = tuple(k for k in TUNED if getattr(self, k) is None) if self.preset == "auto" else ()
            object.__setattr__(self, "auto_tunes", unset)
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        for key in ("cycle_length", "block_length", "parse_batch", "order_cycle"):
            if getattr(self, key) < 1:
                raise ValueError(f"pipeline.{key}={getattr(self, key)} must be >= 1")
        for key in ("read_parallelism", "map_parallelism", "prefetch_buffer"):
            value = getattr(self, key)
            if value == 0 and key != "prefetch_buffer" or value < AUTOTUNE:
                raise ValueError(f"pipeline.{key}={value}: use a positive count or -1 for AUTOTUNE")
        if self.prefetch and self.prefetch_buffer == 0:
            raise ValueError("pipeline.prefetch=true needs pipeline.prefetch_buffer >= 1 or -1 (AUTOTUNE)")
        if self.max_corrupt < 0 or self.private_threadpool < 0 or self.autotune_cpu_budget < 0:
            raise ValueError("pipeline.max_corrupt, private_threadpool and autotune_cpu_budget must be >= 0")
        if self.data_service and not self.data_service.startswith("grpc://"):
            raise ValueError(f"pipeline.data_service={self.data_service!r}: expected grpc://host:port")
        if self.service_timeout_s <= 0:
            raise ValueError("pipeline.service_timeout_s must be > 0")
