"""Loaders: the same JPEGs to the same float batches by stoker and by what users pick instead.

Rows: stoker ``optimized`` (``ingest.pipeline.build``); the plain tf.data pipeline a user
writes (``TFRecordDataset -> shuffle -> map(AUTOTUNE) -> batch -> prefetch(AUTOTUNE)``,
full decode then crop); the PyTorch ``DataLoader`` with ``num_workers`` = cores and PIL;
a DALI CPU pipeline. Each is built, measured and freed in turn, in two passes (forward,
then in reverse), and each figure pools both passes, so drifting load favors no side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf

from benchmarks import data, rates
from benchmarks.config import BenchConfig
from benchmarks.images import FEATURES, ImagenetShapes
from benchmarks.runner import SuiteResult, Target, row
from ingest.dataset import Dataset
from ingest.options import PipelineOptions
from ingest.pipeline import build


@dataclasses.dataclass(frozen=True)
class Loader:
    """A named way to get batches: ``make(cfg, dataset)`` -> (iterator factory, size_of, shape_of).

    Another loader (e.g. the tf.data service of issue 7) is one more entry of :func:`loaders`.
    """

    name: str
    make: Callable[[BenchConfig, ImagenetShapes], tuple[Callable[[], Iterator[Any]], Callable, Callable]]
    fills_cache: bool = False  # warm up over one whole epoch first, so timing sees the filled cache


def _tf_shape(batch: Any) -> list[int]:
    images = batch["image"] if isinstance(batch, dict) else batch[0]
    return list(images.shape)


def stoker(options: PipelineOptions) -> Callable:
    """stoker's ``build`` with ``options``, training mode, same shuffle buffer as the others."""

    def make(cfg: BenchConfig, dataset: Dataset):
        built = build(
            dataset, "train", options, batch_size=cfg.batch, training=True, seed=0, shuffle_buffer=cfg.shuffle_buffer
        )
        return (lambda: iter(built.dataset)), rates.batch_size, _tf_shape

    return make


def plain_tf_data(cfg: BenchConfig, dataset: ImagenetShapes):
    """The pipeline most users write: one reader, full decode, then crop, parallel map."""
    mean, std = dataset.moments()
    bbox = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])

    def parse(record: tf.Tensor):
        ex = tf.io.parse_single_example(record, FEATURES)
        image = tf.io.decode_jpeg(ex["image"], channels=3)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image),
            bbox,
            min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        image = tf.image.resize(tf.slice(image, begin, size), [cfg.crop, cfg.crop])
        image = tf.image.random_flip_left_right(image)
        return (image / 255.0 - mean) / std, ex["label"]

    ds = (
        tf.data.TFRecordDataset(dataset.files("train"))
        .shuffle(cfg.shuffle_buffer)
        .repeat()
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(cfg.batch, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    return (lambda: iter(ds)), rates.batch_size, _tf_shape


def pytorch(cfg: BenchConfig, dataset: ImagenetShapes):
    """torch DataLoader over the same JPEGs as loose files, ``num_workers`` = cores."""
    from benchmarks import torch_loader

    mean, std = (t.numpy().tolist() for t in dataset.moments())
    dl = torch_loader.loader(
        data.jpeg_files(cfg), batch=cfg.batch, workers=cfg.cores, crop=cfg.crop, mean=mean, std=std
    )
    return (lambda: torch_loader.forever(dl)), (lambda b: int(b.shape[0])), (lambda b: list(b.shape))


def dali(cfg: BenchConfig, dataset: ImagenetShapes):
    """DALI CPU pipeline over the same TFRecord shards, ``num_threads`` = cores."""
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
    return (lambda: dali_loader.batches(pipe)), dali_loader.size_of, dali_loader.shape_of


def loaders() -> tuple[Loader, ...]:
    """The loaders in the order of the first pass."""
    opt = PipelineOptions(preset="optimized")
    return (
        Loader("stoker optimized", stoker(opt), fills_cache=True),
        Loader("plain tf.data", plain_tf_data),
        Loader("PyTorch DataLoader", pytorch),
        Loader("DALI CPU", dali),
        Loader("stoker optimized, no cache", stoker(dataclasses.replace(opt, cache=False))),
    )


def entry(loader: Loader, cfg: BenchConfig, dataset: ImagenetShapes, shapes: list) -> tuple:
    """(make_iter, size_of, epoch) of one loader for :func:`rates.one_by_one`; records its batch shape."""
    make_iter, size_of, shape_of = loader.make(cfg, dataset)

    def count(batch: Any) -> int:
        if len(shapes) < 1:
            shapes.append(shape_of(batch))
        return size_of(batch)

    return make_iter, count, (dataset.num_examples("train") or 0) if loader.fills_cache else 0


def run(cfg: BenchConfig) -> SuiteResult:
    """The loaders suite on the benchmark ``shapes`` files, measured in turns."""
    if cfg.dataset:
        note = f"the loaders suite compares image loaders on shapes; skipped for {cfg.dataset}"
        return SuiteResult("loaders", (), notes=(note,))
    dataset = ImagenetShapes(data.shapes(cfg).options, crop=cfg.crop)
    chosen = loaders()
    shapes: list[list] = [[] for _ in chosen]
    factories = [lambda ld=ld, s=s: entry(ld, cfg, dataset, s) for ld, s in zip(chosen, shapes, strict=True)]
    measured = rates.one_by_one(factories, cfg)
    base = measured[0].median
    rows = [
        row(
            "loaders",
            ld.name,
            tp,
            unit="examples/s",
            batch_shape=s[0] if s else [],
            stoker_over_this=rates.ratio(base, tp.median),
        )
        for ld, tp, s in zip(chosen, measured, shapes, strict=True)
    ]
    by = {r["name"]: r for r in rows}
    targets = tuple(
        Target(
            f"stoker / {name}",
            wanted,
            by[name]["stoker_over_this"],
            f"{base:.0f} vs {by[name]['median']:.0f} examples/s",
        )
        for name, wanted in (("PyTorch DataLoader", 1.3), ("DALI CPU", 1.0), ("plain tf.data", 1.2))
    )
    return SuiteResult(
        "loaders",
        tuple(rows),
        targets,
        notes=(
            "Loaders run one at a time in two passes (forward, then reverse); each figure pools both passes' windows.",
        ),
    )
