"""Ablation: the tf.data guide's table on real files, one optimization switched on per row.

Every row is ``ingest.pipeline.build`` with other :class:`~ingest.options.PipelineOptions`,
so naive and optimized are the same code. Image rows run ImageNet-style preprocessing on
``shapes`` at 256 px (decode, random resized crop to 224, flip, normalize, batch 64) and are
compared with the decode bound measured in the same passes; ``clicks`` rows compare
per-example with batched parsing; the guide's sleep-based rows close the suite.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from benchmarks import artificial, ceilings, data, rates, runner
from benchmarks.config import BenchConfig
from benchmarks.images import ImagenetShapes, PixelShapes
from benchmarks.runner import SuiteResult, row
from ingest.dataset import Dataset
from ingest.options import AUTOTUNE, PipelineOptions
from ingest.pipeline import build

NAIVE = PipelineOptions(preset="naive")
# Cumulative rows of the guide's table: each adds one switch to the row above it.
STEPS: tuple[tuple[str, dict], ...] = (
    ("naive", {}),
    ("+ prefetch", dict(prefetch=True, prefetch_buffer=AUTOTUNE)),
    ("+ parallel interleave", dict(interleave=True, read_parallelism=AUTOTUNE)),
    ("+ parallel map", dict(map_parallelism=AUTOTUNE)),
    ("+ vectorized parse", dict(vectorize=True)),
    ("+ cache", dict(cache=True)),
)


def cumulative() -> list[tuple[str, PipelineOptions]]:
    """(row name, options) of the cumulative rows, then ``optimized`` (the preset: all on, AUTOTUNE)."""
    out, switches = [], {}
    for name, extra in STEPS:
        switches.update(extra)
        out.append((name, dataclasses.replace(NAIVE, **switches)))
    out.append(("optimized", PipelineOptions(preset="optimized")))
    return out


AA = " (A/A repeat)"  # suffix of the row that measures a configuration a second time


def pipeline_entry(dataset: Dataset, options: PipelineOptions, cfg: BenchConfig) -> rates.Entry:
    """(make_iter, size_of) of the training pipeline ``build`` makes with ``options``."""
    built = build(
        dataset, "train", options, batch_size=cfg.batch, training=True, seed=0, shuffle_buffer=cfg.shuffle_buffer
    )
    return rates.entry(built.dataset)


def image_rows(cfg: BenchConfig) -> tuple[list[dict], float]:
    """The image table and its A/A noise.

    Two decode pipelines over in-memory JPEGs run in the same passes as the rows: one thread
    (times the cores: a reference, not a limit) and ``cores`` threads, whose best window is
    the *decode bound*: the same per-image work with every core busy and nothing else in the
    pipeline. ``of_bound`` is given only for rows that do that same work per example.
    """
    base = data.shapes(cfg).options
    images = ImagenetShapes(base, crop=cfg.crop)
    variants = [(n, images, o) for n, o in cumulative()] + fixes(cfg, base)
    variants.append(("optimized" + AA, images, PipelineOptions(preset="optimized")))
    refs = [ceilings.decode_pipeline(cfg, images), ceilings.decode_pipeline(cfg, images, threads=cfg.cores)]
    entries = [lambda d=d: rates.entry(d) for d in refs]
    entries += [lambda v=v: pipeline_entry(v[1], v[2], cfg) for v in variants]
    epoch = images.num_examples("train") or cfg.image_examples
    one, parallel, *measured = rates.one_by_one(entries, cfg, warm_examples=epoch)
    bound = parallel.windows.high
    by = {name: tp.median for (name, *_), tp in zip(variants, measured, strict=True)}
    naive, optimized = by["naive"], by["optimized"]
    noise = rates.spread(optimized, by["optimized" + AA])
    rows = [
        row(
            "image",
            "reference: decode on 1 thread over memory, x cores",
            one,
            unit="examples/s per core",
            x_cores=round(one.median * cfg.cores, 1),
            naive_epoch_s=round(epoch / naive, 1),
        ),
        row(
            "image",
            "decode bound",
            parallel,
            unit="examples/s",
            bound=round(bound, 1),
            how=f"{cfg.cores} threads over in-memory JPEGs, best of {parallel.windows.reps} windows",
        ),
    ]
    fix_names = {name for name, *_ in fixes(cfg, base)}
    for (name, dataset, _), tp in zip(variants, measured, strict=True):
        extra: dict = {"x_naive": rates.ratio(tp.median, naive)}
        if dataset.decodes_every_epoch:
            extra["of_bound"] = rates.ratio(tp.median, bound)
        if name in fix_names:
            extra["vs_optimized"] = rates.ratio(tp.median, optimized)
        rows.append(row("image", name, tp, unit="examples/s", **extra))
    return rows, noise


def fixes(cfg: BenchConfig, base) -> list[tuple[str, Dataset, PipelineOptions]]:
    """Rows that each change one thing on top of ``optimized``."""
    opt = PipelineOptions(preset="optimized")
    fused = ImagenetShapes(base, crop=cfg.crop)
    return [
        ("optimized, full decode then crop", ImagenetShapes(base, crop=cfg.crop, fused=False), opt),
        (f"optimized, private pool {cfg.cores}", fused, dataclasses.replace(opt, private_threadpool=cfg.cores)),
        ("optimized, block_length 16", fused, dataclasses.replace(opt, block_length=16)),
        ("optimized, no cache", fused, dataclasses.replace(opt, cache=False)),
        ("optimized, map fusion off", fused, dataclasses.replace(opt, map_fusion=False)),
        ("optimized, cache decoded pixels", PixelShapes(base, crop=cfg.crop), opt),
        # The same JPEGs as loose files in class folders, prepared by DATASET=images: a user's own data.
        ("optimized, image folder (DATASET=images)", data.image_folder(cfg), opt),
    ]


PER_EXAMPLE = "per-example parse (naive)"


def click_rows(cfg: BenchConfig) -> tuple[list[dict], float]:
    """Per-example vs batched parse on ``clicks``: whole pipelines, then the parse stage alone."""
    dataset = data.clicks(cfg)
    arrow = type(dataset)(dataclasses.replace(dataset.options, parquet_reader="pyarrow"))
    no_cache = PipelineOptions(preset="optimized", cache=False)
    variants = [
        (PER_EXAMPLE, dataset, NAIVE),
        ("batched parse (naive + vectorize)", dataset, dataclasses.replace(NAIVE, vectorize=True)),
        ("optimized, per-example parse", dataset, dataclasses.replace(no_cache, vectorize=False)),
        (
            "optimized, per-example parse, sequential interleave",
            dataset,
            dataclasses.replace(no_cache, vectorize=False, interleave=False, read_parallelism=1),
        ),
        ("optimized, batched parse", dataset, no_cache),
        ("optimized (with cache)", dataset, PipelineOptions(preset="optimized")),
        ("per-example parse, pyarrow reader", arrow, NAIVE),
        ("batched parse, pyarrow reader", arrow, dataclasses.replace(NAIVE, vectorize=True)),
    ]
    entries = [lambda v=v: pipeline_entry(v[1], v[2], cfg) for v in variants]
    one, many = parse_stage(cfg, dataset)
    entries += [lambda d=d: rates.entry(d) for d in (one, many)]
    entries.append(entries[0])  # the A/A pair: the first row again, last
    names = [v[0] for v in variants] + ["parse stage alone, per example", "parse stage alone, batches of 256"]
    names.append(PER_EXAMPLE + AA)
    epoch = dataset.num_examples("train") or cfg.clicks_rows
    measured = rates.one_by_one(entries, cfg, warm_examples=epoch, window=cfg.clicks_window_batches)
    by = dict(zip(names, (tp.median for tp in measured), strict=True))
    stage = by["parse stage alone, per example"]
    rows = []
    for name, tp in zip(names, measured, strict=True):
        extra = {"x_naive": rates.ratio(tp.median, stage if name.startswith("parse stage") else by[PER_EXAMPLE])}
        if name.startswith("optimized, batched"):
            extra["x_optimized_per_example"] = rates.ratio(tp.median, by["optimized, per-example parse"])
        rows.append(row("clicks", name, tp, unit="examples/s", **extra))
    return rows, rates.spread(by[PER_EXAMPLE], by[PER_EXAMPLE + AA])


def parse_stage(cfg: BenchConfig, dataset: Dataset) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The parse function alone over rows held in memory: one row per call, and 256 rows per call."""
    table = next(
        iter(tf.data.Dataset.from_tensor_slices(dataset.files("train")[:1]).flat_map(dataset.read).batch(4096).take(1))
    )
    rows_ds = tf.data.Dataset.from_tensor_slices(table).repeat()
    one = rows_ds.map(
        lambda r: tf.nest.map_structure(lambda t: t[0], dataset.parse(tf.nest.map_structure(lambda t: t[None], r)))
    ).batch(cfg.batch)
    many = rows_ds.batch(256).map(dataset.parse).unbatch().batch(cfg.batch)
    return one, many


def run(cfg: BenchConfig) -> SuiteResult:
    """The ablation suite: image rows, clicks rows and the guide's artificial rows."""
    if cfg.dataset:
        return _run_custom(cfg)
    images, image_noise = image_rows(cfg)
    clicks, click_noise = click_rows(cfg)
    guide = artificial.rows(cfg)
    noise = {"image": image_noise, "clicks": click_noise, "artificial": artificial.noise(guide)}
    rows = images + clicks + guide
    notes = (
        "Every row warms up over one epoch of its split (timed: first_epoch_per_s; for cached rows the cache-fill "
        f"epoch), then {cfg.warmup} untimed window(s); then {math.ceil(cfg.reps / 2)} timed windows in each of two "
        "passes (forward, then reverse), pooled.",
        "A/A: one configuration per group is measured twice (its repeat is the last row); a difference smaller "
        "than that spread is no measurable difference.",
    )
    return SuiteResult("ablation", tuple(rows), runner.judge("ablation", rows, noise), notes, noise)


def _run_custom(cfg: BenchConfig) -> SuiteResult:
    """The cumulative rows on a user's registered dataset (its own parse and augment)."""
    from ingest import datasets
    from ingest.options import DataOptions

    dataset = datasets.get(DataOptions(name=cfg.dataset, data_dir=cfg.data_dir))
    variants = cumulative()
    variants.append(("naive" + AA, NAIVE))
    epoch = dataset.num_examples("train") or cfg.window_batches * cfg.batch
    measured = rates.one_by_one(
        [lambda o=o: pipeline_entry(dataset, o, cfg) for _, o in variants], cfg, warm_examples=epoch
    )
    rows = [
        row(cfg.dataset, name, tp, unit="examples/s", x_naive=rates.ratio(tp.median, measured[0].median))
        for (name, _), tp in zip(variants, measured, strict=True)
    ]
    noise = {cfg.dataset: rates.spread(measured[0].median, measured[-1].median)}
    return SuiteResult("ablation", tuple(rows), notes=(f"{cfg.dataset} from {cfg.data_dir}",), noise=noise)
