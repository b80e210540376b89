"""Loaders: the same JPEGs to the same batches (images and labels as framework tensors).

Rows: stoker ``optimized`` (``ingest.pipeline.build``); the plain tf.data pipeline a user
writes (``TFRecordDataset -> shuffle -> map(AUTOTUNE) -> batch -> prefetch(AUTOTUNE)``, full
decode, float flip, ``(x / 255 - mean) / std``); the same plain pipeline running stoker's
per-image function (``ingest.image_ops``: fused decode-and-crop, uint8 flip, one
multiply-add), so the ratio to it is what stoker's pipeline machinery alone is worth; the
PyTorch ``DataLoader`` with ``num_workers`` = cores and PIL; a DALI CPU pipeline through
DALI's TensorFlow plugin; stoker without its cache; stoker again (the A/A pair). Each is
built, measured and freed in turn, in two passes (forward, then in reverse).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf

from benchmarks import data, rates, runner
from benchmarks.config import BenchConfig
from benchmarks.images import FEATURES, ImagenetShapes
from benchmarks.runner import SuiteResult, row
from ingest import image_ops
from ingest.dataset import Dataset
from ingest.options import PipelineOptions
from ingest.pipeline import build

STOKER = "stoker optimized"
AA = STOKER + " (A/A repeat)"
Made = tuple[Callable[[], Iterator[Any]], Callable[[Any], int], Callable[[Any], dict]]  # iter, size_of, describe


@dataclasses.dataclass(frozen=True)
class Loader:
    """A named way to get batches: ``make(cfg, dataset)`` -> (iterator factory, size_of, describe).

    Another loader (e.g. the tf.data service of issue 7) is one more entry of :func:`loaders`.
    """

    name: str
    make: Callable[[BenchConfig, ImagenetShapes], Made]


def _pair(batch: Any) -> tuple[Any, Any]:
    """(images, labels) of a batch: a dict with image and label, or an (images, labels) pair."""
    return (batch["image"], batch["label"]) if isinstance(batch, dict) else (batch[0], batch[1])


def describe(batch: Any) -> dict[str, Any]:
    """Shapes, dtypes and tensor types of a batch's images and labels (TensorFlow or torch)."""
    out = {}
    for key, t in zip(("image", "label"), _pair(batch), strict=True):
        out[key] = {
            "shape": list(t.shape),
            "dtype": str(t.dtype).removeprefix("torch.").removeprefix("<dtype: '").removesuffix("'>"),
            "type": f"{type(t).__module__.split('.')[0]}.{type(t).__name__}",
        }
    return out


def _tf_made(ds: tf.data.Dataset) -> Made:
    return (lambda: iter(ds)), rates.batch_size, describe


def stoker(options: PipelineOptions) -> Callable[[BenchConfig, Dataset], Made]:
    """stoker's ``build`` with ``options``, training mode, same shuffle buffer as the others."""

    def make(cfg: BenchConfig, dataset: Dataset) -> Made:
        built = build(
            dataset, "train", options, batch_size=cfg.batch, training=True, seed=0, shuffle_buffer=cfg.shuffle_buffer
        )
        return _tf_made(built.dataset)

    return make


def _plain(cfg: BenchConfig, dataset: ImagenetShapes, per_image: Callable[..., tf.Tensor], *, keyed: bool) -> Made:
    """The pipeline most users write: one reader, shuffle, one parallel map per record, batch, prefetch.

    ``keyed``: ``per_image(jpeg, seed)`` takes a stateless seed from the element's position (as
    stoker's augment stage gives it); otherwise ``per_image(jpeg)`` uses TensorFlow's stateful ops.
    """

    def parse(record: tf.Tensor, seed: tf.Tensor | None = None):
        ex = tf.io.parse_single_example(record, FEATURES)
        image = per_image(ex["image"], seed) if keyed else per_image(ex["image"])
        return image, ex["label"]

    ds = tf.data.TFRecordDataset(dataset.files("train")).shuffle(cfg.shuffle_buffer).repeat()
    if keyed:
        ds = ds.enumerate().map(lambda i, r: (r, tf.stack([tf.constant(0, tf.int64), i])))
    ds = (
        ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(cfg.batch, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    return _tf_made(ds)


def plain_tf_data(cfg: BenchConfig, dataset: ImagenetShapes) -> Made:
    """As users write it: full decode, then crop, resize, float flip, ``(x / 255 - mean) / std``."""
    mean, std = dataset.moments()
    bbox = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])

    def per_image(jpeg: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_jpeg(jpeg, channels=3)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image),
            bbox,
            min_object_covered=0.0,
            aspect_ratio_range=image_ops.RATIO,
            area_range=image_ops.AREA,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        image = tf.image.resize(tf.slice(image, begin, size), [cfg.crop, cfg.crop])
        image = tf.image.random_flip_left_right(image)
        return (image / 255.0 - mean) / std

    return _plain(cfg, dataset, per_image, keyed=False)


def plain_with_stoker_fn(cfg: BenchConfig, dataset: ImagenetShapes) -> Made:
    """The same plain pipeline with stoker's per-image function (``ingest.image_ops``)."""
    mean, std = dataset.moments()

    def per_image(jpeg: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return image_ops.normalize(image_ops.random_resized_crop(jpeg, seed, crop=cfg.crop), mean, std)

    return _plain(cfg, dataset, per_image, keyed=True)


def pytorch(cfg: BenchConfig, dataset: ImagenetShapes) -> Made:
    """torch DataLoader over the same JPEGs as loose files in class folders, ``num_workers`` = cores."""
    from benchmarks import torch_loader

    mean, std = (t.numpy().tolist() for t in dataset.moments())
    dl = torch_loader.loader(
        data.jpeg_files(cfg), batch=cfg.batch, workers=cfg.cores, crop=cfg.crop, mean=mean, std=std
    )
    return (lambda: torch_loader.forever(dl)), (lambda b: int(b[0].shape[0])), describe


def dali(cfg: BenchConfig, dataset: ImagenetShapes) -> Made:
    """DALI CPU pipeline over the same TFRecord shards, ``num_threads`` = cores, as TensorFlow tensors."""
    from benchmarks import dali_loader

    files = dataset.files("train")
    mean, std = (t.numpy().tolist() for t in dataset.moments())
    pipe = dali_loader.pipeline(
        files,
        data.dali_index(cfg, files),
        batch=cfg.batch,
        threads=cfg.cores,
        crop=cfg.crop,
        mean=mean,
        std=std,
        shuffle_buffer=cfg.shuffle_buffer,
    )
    return _tf_made(dali_loader.dataset(pipe, batch=cfg.batch, crop=cfg.crop, threads=cfg.cores))


def loaders() -> tuple[Loader, ...]:
    """The loaders in the order of the first pass; the A/A repeat of stoker is last."""
    opt = PipelineOptions(preset="optimized")
    return (
        Loader(STOKER, stoker(opt)),
        Loader("plain tf.data", plain_tf_data),
        Loader("plain tf.data, stoker's per-image function", plain_with_stoker_fn),
        Loader("PyTorch DataLoader", pytorch),
        Loader("DALI CPU", dali),
        Loader("stoker optimized, no cache", stoker(dataclasses.replace(opt, cache=False))),
        Loader(AA, stoker(opt)),
    )


def entry(loader: Loader, cfg: BenchConfig, dataset: ImagenetShapes, seen: list) -> rates.Entry:
    """(make_iter, size_of) of one loader for :func:`rates.one_by_one`; records what its first batch holds."""
    make_iter, size_of, describe_batch = loader.make(cfg, dataset)

    def count(batch: Any) -> int:
        if not seen:
            seen.append(describe_batch(batch))
        return size_of(batch)

    return make_iter, count


def run(cfg: BenchConfig) -> SuiteResult:
    """The loaders suite on the benchmark ``shapes`` files, measured in turns."""
    if cfg.dataset:
        note = f"the loaders suite compares image loaders on shapes; skipped for {cfg.dataset}"
        return SuiteResult("loaders", (), notes=(note,))
    dataset = ImagenetShapes(data.shapes(cfg).options, crop=cfg.crop)
    chosen = loaders()
    seen: list[list] = [[] for _ in chosen]
    factories = [lambda ld=ld, s=s: entry(ld, cfg, dataset, s) for ld, s in zip(chosen, seen, strict=True)]
    epoch = dataset.num_examples("train") or cfg.image_examples
    measured = rates.one_by_one(factories, cfg, warm_examples=epoch)
    base = measured[0].median
    rows = [
        row(
            "loaders",
            ld.name,
            tp,
            unit="examples/s",
            batch=s[0] if s else {},
            stoker_over_this=rates.ratio(base, tp.median),
        )
        for ld, tp, s in zip(chosen, measured, seen, strict=True)
    ]
    noise = {"loaders": rates.spread(base, measured[-1].median)}
    notes = (
        "Every loader warms up over one epoch (timed: first_epoch_per_s; for stoker with its cache, the cache-fill "
        f"epoch), then {cfg.warmup} untimed window(s), then timed windows in two passes (forward, then reverse).",
        "stoker / plain tf.data compares two per-image functions and two pipelines; stoker / plain tf.data with "
        "stoker's per-image function is what the pipeline machinery alone is worth.",
    )
    return SuiteResult("loaders", tuple(rows), runner.judge("loaders", rows, noise), notes, noise)
