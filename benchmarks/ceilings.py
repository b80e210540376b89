"""Ceilings: this machine's limits and references for the work the pipelines do.

- decode: JPEG decode + random resized crop to 224 + flip + normalize + batch over JPEG bytes
  held in memory (stoker's per-image function, ``ingest.image_ops``). The *bound* is that work
  on ``cores`` threads with nothing else in the pipeline, best of the timed windows; one
  thread times the cores is a *reference* only (the cores do not scale perfectly, and other
  work shares them), never reported as a limit.
- parse: ``tf.io.parse_example`` on batches of in-memory serialized Examples, one thread.
- read: sequential bandwidth of the TFRecord shards from the page cache (plain file reads
  and ``TFRecordDataset``), after one untimed pass has put them in the page cache.
- A/A: the one-thread fused decode is measured a second time, last; the relative spread of
  the two is this suite's noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import tensorflow as tf

from benchmarks import data, rates
from benchmarks.config import BenchConfig
from benchmarks.images import FEATURES, ImagenetShapes
from benchmarks.runner import SuiteResult, row
from ingest.image_ops import normalize, random_resized_crop
from stoker import timing


def one_core(ds: tf.data.Dataset, threads: int = 1) -> tf.data.Dataset:
    """``ds`` run by ``threads`` threads: a private pool, no intra-op parallelism, no autotune."""
    opts = tf.data.Options()
    opts.threading.private_threadpool_size = threads
    opts.threading.max_intra_op_parallelism = 1
    opts.autotune.enabled = False
    opts.experimental_optimization.map_parallelization = False
    opts.experimental_optimization.inject_prefetch = False
    return ds.with_options(opts)


def records(files: list[str], count: int) -> list[bytes]:
    """The first ``count`` serialized records of ``files`` (host memory)."""
    ds = tf.data.TFRecordDataset(files).take(count)
    return [r.numpy() for r in ds]


def decode_pipeline(
    cfg: BenchConfig, dataset: ImagenetShapes, *, fused: bool = True, threads: int = 1
) -> tf.data.Dataset:
    """Decode + crop + flip + normalize + batch over in-memory JPEGs on ``threads`` threads."""
    jpegs = tf.io.parse_example(records(dataset.files("train"), cfg.ceiling_images), FEATURES)["image"]
    mean, std = dataset.moments()

    def work(i: tf.Tensor, jpeg: tf.Tensor) -> tf.Tensor:
        image = random_resized_crop(jpeg, tf.stack([tf.constant(0, tf.int64), i]), crop=cfg.crop, fused=fused)
        return normalize(image, mean, std)

    ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat().enumerate()
    return one_core(ds.map(work, num_parallel_calls=threads if threads > 1 else None).batch(cfg.batch), threads)


def decode_rate(
    cfg: BenchConfig, dataset: ImagenetShapes, *, fused: bool = True, threads: int = 1
) -> timing.Throughput:
    """Examples/s of :func:`decode_pipeline` (windows of ``cfg.ceiling_images`` examples)."""
    ds = decode_pipeline(cfg, dataset, fused=fused, threads=threads)
    batches = max(1, cfg.ceiling_images // cfg.batch)
    return timing.measure(
        lambda: iter(ds), elements=batches, reps=cfg.reps, warmup=cfg.warmup, size_of=lambda b: int(b.shape[0])
    )


def parse_rate(cfg: BenchConfig, files: list[str], features: dict, *, batch: int = 256) -> timing.Throughput:
    """Records/s of batched ``parse_example`` on one core over in-memory records."""
    recs = records(files, max(batch, cfg.ceiling_images))
    ds = one_core(
        tf.data.Dataset.from_tensor_slices(recs).repeat().batch(batch).map(lambda r: tf.io.parse_example(r, features))
    )
    return timing.measure(
        lambda: iter(ds),
        elements=max(4, len(recs) // batch),
        reps=cfg.reps,
        warmup=cfg.warmup,
        size_of=lambda ex: int(next(iter(ex.values())).shape[0]),
    )


def _file_bytes(files: list[str], chunk: int = 8 << 20) -> Iterator[int]:
    for path in itertools.cycle(files):
        n = 0
        with open(path, "rb", buffering=0) as f:
            while block := f.read(chunk):
                n += len(block)
        yield n


def read_rates(cfg: BenchConfig, files: list[str]) -> tuple[timing.Throughput, timing.Throughput]:
    """Bytes/s of plain sequential reads, and records/s of ``TFRecordDataset``, page cache warm."""
    plain = timing.measure(
        lambda: _file_bytes(files), elements=len(files), reps=cfg.reps, warmup=cfg.warmup, size_of=lambda n: n
    )
    ds = one_core(tf.data.TFRecordDataset(files).repeat().batch(256))
    total = sum(1 for _ in tf.data.TFRecordDataset(files))
    tfr = timing.measure(
        lambda: iter(ds),
        elements=max(1, total // 256),
        reps=cfg.reps,
        warmup=cfg.warmup,
        size_of=lambda b: int(b.shape[0]),
    )
    return plain, tfr


def _mean_record_bytes(files: list[str]) -> float:
    import os

    total = sum(1 for _ in tf.data.TFRecordDataset(files))
    return sum(os.path.getsize(f) for f in files) / max(total, 1)


def run(cfg: BenchConfig) -> SuiteResult:
    """The ceilings suite on ``shapes`` (or only parse/read on ``cfg.dataset``)."""
    if cfg.dataset:
        return _run_custom(cfg)
    images = ImagenetShapes(data.shapes(cfg).options, crop=cfg.crop)
    files = images.files("train")
    rows = []
    for fused in (True, False):
        tp = decode_rate(cfg, images, fused=fused)
        rows.append(
            row(
                "decode",
                "reference: decode+crop " + ("fused" if fused else "full decode, then crop") + ", 1 thread",
                tp,
                unit="examples/s per core",
                x_cores=round(tp.median * cfg.cores, 1),
                cores=cfg.cores,
            )
        )
    tp = decode_rate(cfg, images, threads=cfg.cores)
    rows.append(
        row(
            "decode",
            f"decode bound: decode+crop fused, {cfg.cores} threads, best window",
            tp,
            unit="examples/s",
            bound=round(tp.high, 1),
            x_one_core=round(tp.high / rows[0]["median"], 2),
        )
    )
    again = decode_rate(cfg, images)
    rows.append(row("decode", rows[0]["name"] + " (A/A repeat)", again, unit="examples/s per core"))
    noise = {"decode": rates.spread(rows[0]["median"], again.median)}
    tp = parse_rate(cfg, files, FEATURES)
    rows.append(
        row(
            "parse",
            "parse_example, batch 256",
            tp,
            unit="records/s per core",
            x_cores=round(tp.median * cfg.cores, 1),
            cores=cfg.cores,
        )
    )
    rows.extend(_read_rows(cfg, files))
    notes = (
        f"cores={cfg.cores}; each row times {cfg.reps} windows straight after {cfg.warmup} untimed window(s).",
        "The decode bound is the best window of the parallel decode; 1 thread x cores is a reference, not a limit.",
    )
    return SuiteResult("ceilings", tuple(rows), notes=notes, noise=noise)


def _read_rows(cfg: BenchConfig, files: list[str]) -> list[dict]:
    per_record = _mean_record_bytes(files)
    plain, tfr = read_rates(cfg, files)
    mb = 2**20
    return [
        row(
            "read",
            "file read, 8 MiB chunks",
            plain,
            unit="bytes/s",
            mib_s=round(plain.median / mb, 1),
            records_s=round(plain.median / per_record, 1),
        ),
        row(
            "read",
            "TFRecordDataset, 1 thread",
            tfr,
            unit="records/s",
            mib_s=round(tfr.median * per_record / mb, 1),
            records_s=round(tfr.median, 1),
        ),
    ]


def _run_custom(cfg: BenchConfig) -> SuiteResult:
    """Read ceilings for a user's registered dataset (its decode is its own; not measured)."""
    from ingest import datasets
    from ingest.options import DataOptions

    ds = datasets.get(DataOptions(name=cfg.dataset, data_dir=cfg.data_dir))
    files = ds.files("train")
    rows = _read_rows(cfg, files) if ds.format == "tfrecord" else []
    note = f"{cfg.dataset}: read ceilings only (decode and parse ceilings are measured on shapes)."
    return SuiteResult("ceilings", tuple(rows), notes=(note,))
