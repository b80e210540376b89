"""Input position: its speed beside the buffer shuffle, its shuffle quality, its checkpoint cost.

Rows of one suite, measured in the same passes (``order`` rows: windows of about ``rates.WINDOW_S``
seconds of the buffer shuffle, the rows one at a time in ``rates.PASSES`` passes, forward then reverse):

- ``order``: the training pipeline of ``shapes`` (flip augmentation, batch and shuffle window
  as every suite) with today's buffer shuffle and iterator state, and addressed by position
  (window and global orders; in-memory table and streamed from files), examples/s.
- ``shuffle quality``: the first epoch's visit order of each: Kendall's tau against the
  canonical (file) order (0 for a uniform shuffle) and the share of consecutive examples that
  come from the same shard (1 / shards for a uniform shuffle).
- ``order`` also has the same pipeline resampled by class (``data.class_weights=0.4,0.3,0.2,0.1``: class
  0 oversampled, class 3 subsampled; ``ingest.resample``) beside the global order it draws in.
- ``checkpoint``: size and save time of ``tf.train.Checkpoint`` of the default model and Adam,
  alone, with the input position, and with the buffer-shuffled pipeline's iterator.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf

from benchmarks import data, rates
from benchmarks.config import BenchConfig
from benchmarks.runner import SuiteResult, Target, row
from ingest import pipeline
from ingest.built import Position
from ingest.options import PipelineOptions

AA = " (A/A repeat)"
BEFORE = "buffer shuffle, iterator state"
GLOBAL = "global order, position"
BALANCED = "resampled by class (data.class_weights=0.4,0.3,0.2,0.1), position"
CLASS_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
OPT = PipelineOptions(preset="optimized")
VARIANTS: tuple[tuple[str, PipelineOptions, bool], ...] = (
    (BEFORE, OPT, False),
    ("window order, position", OPT, True),
    (GLOBAL, dataclasses.replace(OPT, shuffle="global"), True),
    (BALANCED, OPT, True),  # built on the same data with data.class_weights (balanced())
    (BEFORE + ", no cache", dataclasses.replace(OPT, cache=False), False),
    ("window order, position, streamed (no cache)", dataclasses.replace(OPT, cache=False), True),
    (BEFORE + AA, OPT, False),
)


def balanced(dataset):
    """The same prepared files, resampled by class."""
    from ingest import datasets

    return datasets.get(dataclasses.replace(dataset.options, class_weights=CLASS_WEIGHTS))


def build(dataset, options: PipelineOptions, positioned: bool, cfg: BenchConfig) -> pipeline.Built:
    return pipeline.build(
        dataset,
        "train",
        options,
        batch_size=cfg.batch,
        training=True,
        seed=0,
        shuffle_buffer=cfg.shuffle_buffer,
        position=Position() if positioned else None,
    )


def order_rows(cfg: BenchConfig, dataset) -> tuple[list[dict], list[Target], float, int, int]:
    """The order rows, timed one at a time in ``passes`` passes (forward, reverse, ...) of equal windows."""
    resampled = balanced(dataset)
    entries = [
        lambda v=v: rates.entry(build(resampled if v[0] == BALANCED else dataset, v[1], v[2], cfg).dataset)
        for v in VARIANTS
    ]
    epoch = dataset.num_examples("train")
    window = _window(dataset, cfg)
    passes = 2 if cfg.quick else rates.PASSES
    measured = rates.one_by_one(entries, cfg, warm_examples=epoch, window=window, passes=passes)
    by = {name: tp for (name, *_), tp in zip(VARIANTS, measured, strict=True)}
    noise = rates.spread(by[BEFORE].median, by[BEFORE + AA].median)
    rows = []
    for name, _, positioned in VARIANTS:
        ref = BEFORE + ", no cache" if "no cache" in name else BEFORE
        extra = {"vs_global_order": rates.ratio(by[name].median, by[GLOBAL].median)} if name == BALANCED else {}
        rows.append(
            row(
                "order",
                name,
                by[name],
                unit="examples/s",
                input_state="position" if positioned else "iterator",
                vs_buffer_shuffle=rates.ratio(by[name].median, by[ref].median),
                **extra,
            )
        )
    targets = [
        Target(
            "window order with position within 5% of the buffer shuffle (memory cache)",
            0.95,
            rates.ratio(by["window order, position"].median, by[BEFORE].median),
            detail="examples/s of the optimized shapes pipeline, same passes",
            noise=noise,
            source="issue 13",
        ),
        Target(
            "window order streamed from files within 5% of the buffer shuffle without cache",
            0.95,
            rates.ratio(by["window order, position, streamed (no cache)"].median, by[BEFORE + ", no cache"].median),
            detail="examples/s, both parse every epoch",
            noise=noise,
            source="issue 13",
        ),
        Target(
            "resampling by class within 5% of the global order it draws in",
            0.95,
            rates.ratio(by[BALANCED].median, by[GLOBAL].median),
            detail="examples/s, same data and memory table; the epoch's draws made once per epoch",
            noise=noise,
            source="issue 16",
        ),
    ]
    return rows, targets, noise, window, passes


def _window(dataset, cfg: BenchConfig) -> int:
    """Batches per timed window: ``rates.WINDOW_S`` seconds of the buffer shuffle (the reference row),
    at most one epoch; half-second windows (20 batches) gave this suite A/A spreads near 4%."""
    if cfg.quick:
        return cfg.window_batches
    epoch = dataset.num_examples("train")
    entry = rates.entry(build(dataset, OPT, False, cfg).dataset)
    return rates.timed_window(entry, warm_examples=epoch, least=cfg.window_batches, most=epoch // cfg.batch)


def canonical_ids(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(canonical place of each id, shard of each id): the split read in sorted file order."""
    ids, shards = [], []
    for s, path in enumerate(dataset.files("train")):
        for batch in dataset.read(path).batch(1024).map(dataset.parse):
            ids.append(batch["id"].numpy())
            shards.append(np.full(len(batch["id"]), s))
    ids_, shards_ = np.concatenate(ids), np.concatenate(shards)
    place = np.empty(ids_.max() + 1, np.int64)
    place[ids_] = np.arange(len(ids_))
    shard = np.empty(ids_.max() + 1, np.int64)
    shard[ids_] = shards_
    return place, shard


def kendall_tau(x: np.ndarray) -> float:
    """Kendall's tau of ``x`` against 0..n-1 (no ties): O(n^2) pairs in blocks of rows."""
    n = len(x)
    concordant = 0
    for i in range(0, n, 512):
        block = x[i : i + 512, None]
        later = np.arange(i, min(i + 512, n))[:, None] < np.arange(n)[None, :]
        concordant += int(np.sum((block < x[None, :]) & later))
    pairs = n * (n - 1) // 2
    return (2 * concordant - pairs) / pairs


def quality_rows(cfg: BenchConfig, dataset) -> list[dict]:
    place, shard = canonical_ids(dataset)
    n = dataset.num_examples("train")
    rows = []
    for name, options, positioned in VARIANTS[:3]:
        it = iter(build(dataset, options, positioned, cfg).dataset)
        seen: list[int] = []
        while len(seen) < n - cfg.batch:
            seen.extend(next(it)["id"].numpy().tolist())
        visit = np.array(seen[: n - cfg.batch])
        same = float(np.mean(shard[visit[1:]] == shard[visit[:-1]]))
        rows.append(
            {
                "group": "shuffle quality",
                "name": name,
                "unit": "first epoch",
                "kendall_tau_vs_file_order": round(kendall_tau(place[visit]), 4),
                "same_shard_neighbours": round(same, 4),
                "uniform_same_shard": round(1 / len(dataset.files("train")), 4),
                "examples": len(visit),
            }
        )
    return rows


def _save_times(kinds: dict[str, tf.train.Checkpoint], reps: int) -> dict[str, tuple[float, int]]:
    """Each kind's median seconds over ``reps`` saves (the kinds taken in turns) and one checkpoint's bytes."""
    times: dict[str, list[float]] = {name: [] for name in kinds}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, ckpt in kinds.items():  # the first save of each builds its save graph: untimed
            ckpt.write(os.path.join(tmp, f"warm-{len(sizes)}"))
            sizes[name] = 0
        for rep in range(reps):
            for k, (name, ckpt) in enumerate(kinds.items()):
                prefix = os.path.join(tmp, f"k{k}-r{rep}")
                t0 = time.perf_counter()
                ckpt.write(prefix)
                times[name].append(time.perf_counter() - t0)
                if rep == 0:
                    sizes[name] = sum(
                        os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp) if f.startswith(f"k{k}-r0.")
                    )
    return {name: (statistics.median(times[name]), sizes[name]) for name in kinds}


def checkpoint_rows(cfg: BenchConfig, dataset) -> tuple[list[dict], list[Target]]:
    import tf_keras as keras

    from training import models
    from training.checkpoints import InputState

    spec = dataset.element_spec["image"]
    model = models.build("shapes_cnn", tuple(spec.shape), dataset.num_classes)
    opt = keras.optimizers.Adam(1e-3)
    opt.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    order, _ = pipeline.training_order(dataset, "train", OPT, seed=0, shuffle_buffer=cfg.shuffle_buffer)
    state = InputState(order, dataset.name)
    it = iter(build(dataset, OPT, False, cfg).dataset)
    for _ in range(2 * cfg.shuffle_buffer // cfg.batch + 2):  # the shuffle buffer full, as mid-epoch
        next(it)
    reps = max(5, 2 * cfg.reps)
    kinds = {
        "model and optimizer only": tf.train.Checkpoint(model=model, optimizer=opt, step=step),
        "with input position": tf.train.Checkpoint(model=model, optimizer=opt, step=step, **state.trackables()),
        "with iterator state (before)": tf.train.Checkpoint(model=model, optimizer=opt, step=step, iterator=it),
    }
    measured = _save_times(kinds, reps)
    base_s, base_b = measured["model and optimizer only"]
    rows = [
        {
            "group": "checkpoint",
            "name": name,
            "unit": "one save",
            "save_ms_median": round(s * 1000, 2),
            "extra_ms_over_model": round((s - base_s) * 1000, 2),
            "bytes": b,
            "mb": round(b / 2**20, 3),
            "input_state_bytes": state.nbytes() if "position" in name else (b - base_b if "iterator" in name else 0),
            "saves": reps,
            "shuffle_buffer": cfg.shuffle_buffer,
            "image": list(spec.shape),
        }
        for name, (s, b) in measured.items()
    ]
    pos_s, _ = measured["with input position"]
    targets = [
        Target(
            "input state at most 64 KB per worker",
            1.0,
            rates.ratio(65536, state.nbytes()),
            detail=f"{state.nbytes()} bytes (measured / wanted as 64 KB / state)",
            source="issue 13",
        ),
        Target(
            "a save costs at most 50 ms more than model and optimizer alone",
            1.0,
            rates.ratio(base_s + 0.050, pos_s),
            detail=f"{(pos_s - base_s) * 1000:.2f} ms more (ratio: (model-only save + 50 ms) / save with position)",
            source="issue 13",
        ),
    ]
    return rows, targets


def run(cfg: BenchConfig) -> SuiteResult:
    dataset = data.shapes(cfg)
    rows, targets, noise, window, passes = order_rows(cfg, dataset)
    rows += quality_rows(cfg, dataset)
    ck_rows, ck_targets = checkpoint_rows(cfg, dataset)
    notes = (
        "order rows: the optimized shapes pipeline (flip, batch and shuffle window as every suite); "
        "position rows checkpoint 3 numbers, the buffer shuffle checkpoints its iterator",
        f"order rows: timed in windows of {window} batches"
        + ("" if cfg.quick else f" (about {rates.WINDOW_S:g} s of the buffer shuffle)")
        + f", the rows one at a time in {passes} passes (forward, reverse, ...), each warmed up again in every pass",
        "checkpoint rows: the iterator is taken after the shuffle buffer filled, as mid-epoch",
    )
    return SuiteResult("position", tuple(rows + ck_rows), tuple(targets + ck_targets), notes, {"order": noise})
