"""Ablation: the tf.data guide's table on real files, one optimization switched on per row.

Every row is ``ingest.pipeline.build`` with other :class:`~ingest.options.PipelineOptions`,
so naive and optimized are the same code. Image rows run ImageNet-style preprocessing on
``shapes`` at 256 px (decode, random resized crop to 224, flip, normalize, batch 64) and are
compared with the decode ceiling measured in this process; ``clicks`` rows compare
per-example with batched parsing; the guide's sleep-based rows close the suite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from benchmarks import artificial, ceilings, data, rates
from benchmarks.config import BenchConfig
from benchmarks.images import ImagenetShapes, PixelShapes
from benchmarks.runner import SuiteResult, Target, row
from ingest.dataset import Dataset
from ingest.options import AUTOTUNE, PipelineOptions
from ingest.pipeline import build

Tweak = Callable[[tf.data.Dataset], tf.data.Dataset]

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


def pipeline_rate(dataset: Dataset, options: PipelineOptions, cfg: BenchConfig, *, window: int | None = None,
                  tweak: Tweak | None = None):
    """Examples/s of the training pipeline ``build`` makes (a cache is filled before timing).

    ``tweak`` applies tf.data options stoker has no switch for, to show what a switch would give.
    """
    built = build(dataset, "train", options, batch_size=cfg.batch, training=True, seed=0,
                  shuffle_buffer=cfg.shuffle_buffer)
    ds = tweak(built.dataset) if tweak else built.dataset
    epoch = (dataset.num_examples("train") or 0) if built.cached else 0
    return rates.batches(lambda: iter(ds), cfg, window=window, epoch_examples=epoch)


def map_fusion(ds: tf.data.Dataset) -> tf.data.Dataset:
    """tf.data's map fusion on: augment and preprocess run as one function per example."""
    opts = tf.data.Options()
    opts.experimental_optimization.map_fusion = True
    return ds.with_options(opts)


def image_rows(cfg: BenchConfig) -> tuple[list[dict], float]:
    """The image table and the decode ceiling (examples/s, all cores) it is compared with."""
    base = data.shapes(cfg).options
    images = ImagenetShapes(base, crop=cfg.crop)
    before = ceilings.decode_rate(cfg, images)
    rows, naive = [], 0.0
    variants = [(n, images, o, None) for n, o in cumulative()] + fixes(cfg, base)
    for name, dataset, options, tweak in variants:
        tp = pipeline_rate(dataset, options, cfg, tweak=tweak)
        naive = naive or tp.median
        rows.append(row("image", name, tp, unit="examples/s", x_naive=rates.ratio(tp.median, naive)))
    after = ceilings.decode_rate(cfg, images)
    parallel = ceilings.decode_rate(cfg, images, threads=cfg.cores)
    # Load from other work drifts during the suite: the higher of the two keeps the ceiling honest.
    best = max(before, after, key=lambda t: t.median)
    ceiling = best.median * cfg.cores
    for r in rows:
        r["of_ceiling"] = rates.ratio(r["median"], ceiling)
        r["of_parallel"] = rates.ratio(r["median"], parallel.median)
    rows.insert(0, row("image", "decode ceiling (1 core, best of before/after)", best, unit="examples/s per core",
                       x_cores=round(ceiling, 1), before=round(before.median, 1), after=round(after.median, 1),
                       naive_epoch_s=round(images.num_examples("train") / naive, 1)))
    rows.insert(1, row("image", f"decode, {cfg.cores} threads over memory (measured)", parallel, unit="examples/s",
                       of_ceiling=rates.ratio(parallel.median, ceiling)))
    return rows, ceiling


def fixes(cfg: BenchConfig, base) -> list[tuple[str, Dataset, PipelineOptions, Tweak | None]]:
    """Rows that try the issue's fixes on top of ``optimized`` (each one change)."""
    opt = PipelineOptions(preset="optimized")
    fused = ImagenetShapes(base, crop=cfg.crop)
    return [
        ("optimized, full decode then crop", ImagenetShapes(base, crop=cfg.crop, fused=False), opt, None),
        (f"optimized, private pool {cfg.cores}", fused, dataclasses.replace(opt, private_threadpool=cfg.cores), None),
        ("optimized, block_length 16", fused, dataclasses.replace(opt, block_length=16), None),
        ("optimized, no cache", fused, dataclasses.replace(opt, cache=False), None),
        ("optimized + tf.data map_fusion", fused, opt, map_fusion),
        ("optimized, cache decoded pixels", PixelShapes(base, crop=cfg.crop), opt, None),
    ]


def click_rows(cfg: BenchConfig) -> tuple[list[dict], float]:
    """Per-example vs batched parse on ``clicks``: whole pipelines, then the parse stage alone."""
    dataset = data.clicks(cfg)
    arrow = type(dataset)(dataclasses.replace(dataset.options, parquet_reader="pyarrow"))
    window = cfg.clicks_window_batches
    variants = [
        ("per-example parse (naive)", dataset, NAIVE),
        ("batched parse (naive + vectorize)", dataset, dataclasses.replace(NAIVE, vectorize=True)),
        ("optimized, per-example parse", dataset, PipelineOptions(preset="optimized", vectorize=False, cache=False)),
        ("optimized, batched parse", dataset, PipelineOptions(preset="optimized", cache=False)),
        ("optimized (with cache)", dataset, PipelineOptions(preset="optimized")),
        ("per-example parse, pyarrow reader", arrow, NAIVE),
        ("batched parse, pyarrow reader", arrow, dataclasses.replace(NAIVE, vectorize=True)),
    ]
    rows, first = [], 0.0
    for name, source, options in variants:
        tp = pipeline_rate(source, options, cfg, window=window)
        first = first or tp.median
        rows.append(row("clicks", name, tp, unit="examples/s", x_naive=rates.ratio(tp.median, first)))
    one, many = parse_stage_rates(cfg, dataset)
    rows.append(row("clicks", "parse stage alone, per example", one, unit="examples/s", x_naive=1.0))
    rows.append(row("clicks", "parse stage alone, batches of 256", many, unit="examples/s",
                    x_naive=rates.ratio(many.median, one.median)))
    return rows, rates.ratio(many.median, one.median)


def parse_stage_rates(cfg: BenchConfig, dataset: Dataset):
    """The parse function alone over rows held in memory: one row per call vs 256 rows per call."""
    table = next(iter(tf.data.Dataset.from_tensor_slices(dataset.files("train")[:1]).flat_map(dataset.read)
                      .batch(4096).take(1)))
    rows_ds = tf.data.Dataset.from_tensor_slices(table).repeat()
    one = rows_ds.map(lambda r: tf.nest.map_structure(lambda t: t[0], dataset.parse(
        tf.nest.map_structure(lambda t: t[None], r)))).batch(cfg.batch)
    many = rows_ds.batch(256).map(dataset.parse).unbatch().batch(cfg.batch)
    window = cfg.clicks_window_batches
    return rates.batches(lambda: iter(one), cfg, window=window), rates.batches(lambda: iter(many), cfg, window=window)


def run(cfg: BenchConfig) -> SuiteResult:
    """The ablation suite: image rows, clicks rows and the guide's artificial rows."""
    if cfg.dataset:
        return _run_custom(cfg)
    images, ceiling = image_rows(cfg)
    clicks, parse_ratio = click_rows(cfg)
    opt = next(r for r in images if r["name"] == "optimized")
    pipeline_ratio = next(r["x_naive"] for r in clicks if r["name"].startswith("batched parse (naive"))
    targets = (
        Target("image: optimized / decode ceiling", 0.8, opt["of_ceiling"],
               f"{opt['median']:.0f} of {ceiling:.0f} examples/s"),
        Target("clicks: batched / per-example parse (pipeline)", 5.0, pipeline_ratio),
        Target("clicks: batched / per-example parse (parse stage alone)", 5.0, parse_ratio),
    )
    return SuiteResult("ablation", tuple(images + clicks + artificial.rows(cfg)), targets)


def _run_custom(cfg: BenchConfig) -> SuiteResult:
    """The cumulative rows on a user's registered dataset (its own parse and augment)."""
    from ingest import datasets
    from ingest.options import DataOptions

    dataset = datasets.get(DataOptions(name=cfg.dataset, data_dir=cfg.data_dir))
    rows, naive = [], 0.0
    for name, options in cumulative():
        tp = pipeline_rate(dataset, options, cfg)
        naive = naive or tp.median
        rows.append(row(cfg.dataset, name, tp, unit="examples/s", x_naive=rates.ratio(tp.median, naive)))
    return SuiteResult("ablation", tuple(rows), notes=(f"{cfg.dataset} from {cfg.data_dir}",))
