"""``PIPELINE=dali``: decode and augment JPEGs with an NVIDIA DALI pipeline, fed to tf.data.

DALI reads the TFRecord shards itself (``fn.readers.tfrecord``, with index files stoker
writes once into ``<dataset>/dali_index/``), decodes the JPEGs, flips training images at
random and normalizes, then hands batches to TensorFlow through the DALI plugin's
``DALIDataset``. Without a GPU every operator runs on the CPU and both the pipeline and
``DALIDataset`` get ``device_id=None`` (``DALIDataset``'s default of 0 aborts the whole
process when there is no GPU); with a GPU, decoding is ``mixed`` and the rest runs there.

A dataset whose images differ in size (``sizes_vary``: image folders) is cropped as its
tf.data path crops it: training decodes a random-resized-crop window
(``fn.decoders.image_random_crop``, the same area and aspect ranges as ``ingest.image_ops``) and
resizes it; evaluation resizes the shorter side to ``size / image_ops.CENTER`` and takes the
central ``size`` square.

The batches match the tf.data path's: ``{"image": float32 [B, S, S, 3] normalized with
dataset_info's mean and std, "label": int64 [B], "id": int64 [B]}``. Evaluation
(``repeat=False``) pads DALI's last batch and drops the padding, so it reads each example
once. The DALI pipeline is built with ``enable_checkpointing``, so the controller's
``tf.train.Checkpoint(iterator=...)`` saves and restores the reader's position exactly. If
the TensorFlow plugin cannot be imported, batches come from DALI's own Python
API through ``tf.data.Dataset.from_generator`` instead (slower: one copy per batch).

Where it runs: :func:`build` on the host at build time; the DALI pipeline in DALI's own
threads (CPU) or on the GPU; its result is consumed like any tf.data dataset.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path

import tensorflow as tf

from ingest.built import Built, Request
from ingest.dataset import Dataset
from ingest.options import PipelineOptions
from ingest.sources import tfrecord
from stoker import files, storage
from stoker.errors import DataError

log = logging.getLogger(__name__)
INSTALL = 'pip install -e ".[dali]" && pip install --no-build-isolation -e ".[dali-tf]"  (or `make setup`)'


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """What one DALI pipeline reads and how it transforms it (all host-side values)."""

    files: tuple[str, ...]
    index_files: tuple[str, ...]
    size: int  # image side in pixels
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]
    batch: int  # per input pipeline
    training: bool
    seed: int
    shard: int
    shards: int
    shuffle_buffer: int
    threads: int
    image_key: str = "image"
    label_key: str = "label"
    crop: bool = False  # images of many sizes: random resized crop (training) or center crop to ``size``


def _require_dali():
    try:
        import nvidia.dali  # noqa: F401 - the import is the check
    except ImportError as err:
        raise DataError(
            f"PIPELINE=dali needs NVIDIA DALI, which is not installed ({err}); install it with {INSTALL}, "
            "or use PIPELINE=optimized"
        ) from None


def has_gpu() -> bool:
    """True when TensorFlow sees a GPU (DALI then decodes there)."""
    return bool(tf.config.list_physical_devices("GPU"))


# ---- index files -------------------------------------------------------------------------
def write_index(shard: str | Path, index: str | Path) -> int:
    """Write DALI's index of a TFRecord file ("offset size" per record); returns the records."""
    try:
        lines = [f"{offset} {size}\n" for offset, size in tfrecord.frames(shard)]
    except tfrecord.FramingError as err:
        raise DataError(f"{shard}: {err}; re-run `make prepare`") from None
    files.atomic_write(index, "".join(lines))
    return len(lines)


def index_files(dataset: Dataset, files: list[str]) -> list[str]:
    """Index files of ``files`` under ``<dataset>/dali_index/`` (a temp folder if read-only), made if stale."""
    if storage.is_url(dataset.root):
        raise DataError(
            f"PIPELINE=dali reads local files only and {dataset.root} is object storage; use the tf.data "
            "pipeline (the default) or copy the dataset to a local DATA_DIR"
        )
    folder = dataset.root / "dali_index"
    try:
        folder.mkdir(exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / "stoker-dali-index" / dataset.name
        folder.mkdir(parents=True, exist_ok=True)
    out = []
    for shard in files:
        index = folder / (os.path.basename(shard) + ".idx")
        if not index.exists() or index.stat().st_mtime < os.path.getmtime(shard):
            write_index(shard, index)
        out.append(str(index))
    return out


# ---- the DALI pipeline ---------------------------------------------------------------------
def make_pipeline(plan: Plan, *, gpu: bool, pad_last_batch: bool):
    """The DALI pipeline of ``plan``: read, decode, (flip), normalize; outputs image, label, id."""
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali import tfrecord as tfrec

    @pipeline_def(
        batch_size=plan.batch,
        num_threads=plan.threads,
        device_id=0 if gpu else None,
        seed=plan.seed + 1,
        enable_checkpointing=True,
    )
    def pipe():
        features = {
            plan.image_key: tfrec.FixedLenFeature((), tfrec.string, ""),
            plan.label_key: tfrec.FixedLenFeature([1], tfrec.int64, -1),
            "id": tfrec.FixedLenFeature([1], tfrec.int64, -1),
        }
        ex = fn.readers.tfrecord(
            path=list(plan.files),
            index_path=list(plan.index_files),
            features=features,
            name="reader",
            shard_id=plan.shard,
            num_shards=plan.shards,
            random_shuffle=plan.training,
            initial_fill=max(plan.shuffle_buffer, 1),
            pad_last_batch=pad_last_batch,
            stick_to_shard=True,
        )
        images, crop = _decode(fn, types, ex[plan.image_key], plan, gpu)
        images = fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT,
            output_layout="HWC",
            mean=[255.0 * m for m in plan.mean],
            std=[255.0 * s for s in plan.std],
            mirror=fn.random.coin_flip(probability=0.5) if plan.training else 0,
            **crop,
        )
        return images, fn.reshape(ex[plan.label_key], shape=[]), fn.reshape(ex["id"], shape=[])

    return pipe()


def _decode(fn, types, jpegs, plan: Plan, gpu: bool):
    """Decoded images (and crop_mirror_normalize's crop arguments): whole, or cropped when sizes vary."""
    from ingest import image_ops

    device = "mixed" if gpu else "cpu"
    if plan.crop and plan.training:  # only the random window is decoded, then resized to size x size
        images = fn.decoders.image_random_crop(
            jpegs,
            device=device,
            output_type=types.RGB,
            random_area=list(image_ops.AREA),
            random_aspect_ratio=list(image_ops.RATIO),
            num_attempts=10,
        )
        return fn.resize(images, resize_x=plan.size, resize_y=plan.size), {}
    images = fn.decoders.image(jpegs, device=device, output_type=types.RGB)
    if plan.crop:  # evaluation: shorter side to size / CENTER, then the central size x size
        images = fn.resize(images, resize_shorter=plan.size / image_ops.CENTER)
        return images, {"crop": (plan.size, plan.size)}
    return images, {}


def _bridge(plan: Plan, *, gpu: bool, pad_last_batch: bool) -> tf.data.Dataset:
    """Batches of the DALI pipeline as a tf.data dataset of (image, label, id) tuples."""
    shapes = ((plan.batch, plan.size, plan.size, 3), (plan.batch,), (plan.batch,))
    dtypes = (tf.float32, tf.int64, tf.int64)
    pipe = make_pipeline(plan, gpu=gpu, pad_last_batch=pad_last_batch)
    try:
        from nvidia.dali.plugin.tf import DALIDataset
    except ImportError as err:
        log.warning(
            "DALI's TensorFlow plugin is not importable (%s); feeding tf.data from DALI's Python API "
            "(slower). Install the plugin with %s",
            err,
            INSTALL,
        )
        return _python_bridge(pipe, shapes, dtypes)
    device = "/gpu:0" if gpu else "/cpu:0"
    with tf.device(device):
        # device_id=None without a GPU: the plugin's default (0) aborts the process.
        return DALIDataset(
            pipeline=pipe,
            batch_size=plan.batch,
            output_shapes=shapes,
            output_dtypes=dtypes,
            device_id=0 if gpu else None,
            num_threads=plan.threads,
        )


def _python_bridge(pipe, shapes, dtypes) -> tf.data.Dataset:
    """Fallback without the plugin: run the pipeline from Python, one batch per generator step."""

    def batches():
        pipe.build()
        while True:
            outs = pipe.run()
            yield tuple(o.as_cpu().as_array() if hasattr(o, "as_cpu") else o.as_array() for o in outs)

    spec = tuple(tf.TensorSpec(s, d) for s, d in zip(shapes, dtypes, strict=True))
    return tf.data.Dataset.from_generator(batches, output_signature=spec)


def _lines(path: str) -> int:
    with open(path) as f:
        return sum(1 for _ in f)


def _shard_size(total: int, shard: int, shards: int) -> int:
    """Examples DALI's reader gives shard ``shard`` of ``shards`` (its own split rule)."""
    return total * (shard + 1) // shards - total * shard // shards


# ---- entry point -------------------------------------------------------------------------
def build(dataset: Dataset, request: Request, options: PipelineOptions) -> Built:
    """The ``pipeline.engine=dali`` pipeline of one input pipeline (the facade validated ``request``
    and adds the prefetch)."""
    _require_dali()
    split, training, seed, repeat = request.split, request.training, request.seed, request.repeat
    shuffle_buffer = request.shuffle_buffer
    info = dataset.info
    if info.get("features", {}).get(dataset.feature_key) != "jpeg bytes" or dataset.compression:
        raise DataError(
            f"PIPELINE=dali reads uncompressed TFRecords of JPEG images; dataset {dataset.name!r} "
            f"(features {info.get('features')}, compression {dataset.compression!r}) is not one; "
            "use PIPELINE=optimized, or prepare it without COMPRESSION"
        )
    shards, shard = request.pipelines, request.index
    files = dataset.files(split)
    indexes = index_files(dataset, files)
    size = int(dataset.element_spec[dataset.feature_key].shape[0])
    plan = Plan(
        files=tuple(files),
        index_files=tuple(indexes),
        size=size,
        mean=tuple(info.get("mean", [0.5] * 3)),
        std=tuple(info.get("std", [0.25] * 3)),
        batch=request.batch_size,
        training=training,
        seed=seed,
        shard=shard,
        shards=shards,
        shuffle_buffer=shuffle_buffer if training and options.shuffle else 1,
        threads=options.map_parallelism if options.map_parallelism > 0 else (os.cpu_count() or 1),
        image_key=dataset.feature_key,
        label_key=dataset.label_key,
        crop=bool(getattr(dataset, "sizes_vary", False)),
    )
    gpu = has_gpu()
    log.info(
        "PIPELINE=dali: %s/%s, %d files, batch %d, %s operators",
        dataset.name,
        split,
        len(files),
        plan.batch,
        "GPU" if gpu else "CPU",
    )
    ds = _bridge(plan, gpu=gpu, pad_last_batch=not repeat)
    if not repeat:  # DALI loops forever: take one padded epoch, drop the padding, re-batch
        n = _shard_size(sum(_lines(path) for path in indexes), shard, shards)
        ds = ds.take(-(-n // plan.batch)).unbatch().take(n).batch(plan.batch, drop_remainder=training)
    fk, lk = dataset.feature_key, dataset.label_key
    ds = ds.map(lambda image, label, ids: {fk: image, lk: label, "id": ids})
    return Built(ds, tuple(files), "examples" if shards > 1 else "none", plan.batch, engine="dali")
