"""The measurements: input-only, compute-only, end-to-end, and every prefix of the pipeline.

Everything here runs on the host of one process and returns raw numbers; the analysis is
``profiles.diagnose``. Steady state only: warm-up runs first (the first step compiles, a
cache fills during its first epoch) and time to the first batch is kept apart.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf

from ingest import stages, tfdata
from ingest.built import Built, Request
from ingest.dataset import Dataset
from ingest.options import PipelineOptions
from profiles.measurements import StageRate
from stoker import timing

log = logging.getLogger(__name__)
Batch = dict[str, tf.Tensor]
StepFn = Callable[[Batch], Any]  # one train step on a batch; returns once the step finished
LoopFn = Callable[[Iterator[Batch], int], Any]  # n train steps in one call: a training.trainer.Loop


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """How long to measure: steps split over ``reps`` timed windows after a warm-up."""

    steps: int  # timed steps (batches) per scenario
    reps: int  # timed windows; the median window is reported
    warmup_steps: int  # untimed steps before timing
    stage_batches: int  # batches per window for each prefix
    epoch_batches: int = 0  # batches in one epoch when the cache must fill first (0: no cache)

    @property
    def per_rep(self) -> int:
        return max(1, self.steps // self.reps)

    def warmup_windows(self, at_least: int = 0) -> int:
        """Warm-up in windows of ``per_rep`` covering the warm-up steps and, when caching, one epoch."""
        need = max(self.warmup_steps, at_least, self.epoch_batches + 1 if self.epoch_batches else 0)
        return math.ceil(need / self.per_rep)


def batch_examples(batch: Any) -> int:
    """Examples in a batch: the leading dimension of its first tensor."""
    return int(tf.nest.flatten(batch)[0].shape[0])


def input_only(dataset: tf.data.Dataset, plan: Plan) -> timing.Throughput:
    """Examples/s of the whole pipeline iterated alone; its warm-up fills the cache (the first epoch)."""
    return timing.measure(
        lambda: iter(dataset),
        elements=plan.per_rep,
        reps=plan.reps,
        warmup=plan.warmup_windows(),
        size_of=batch_examples,
    )


@dataclasses.dataclass(frozen=True)
class StepTimings:
    """Compute-only windows around one contiguous end-to-end run."""

    compute_only_s: float  # median over windows of the mean step time on one cached batch
    waits: tuple[float, ...]  # end-to-end, per step: seconds waiting for the next batch
    computes: tuple[float, ...]  # end-to-end, per step: seconds of the train step
    loop_step_s: float = 0.0  # median over windows: a step of a compiled loop over the cached batch (0: not timed)
    handoff_s: float = 0.0  # mean wait inside those loops: taking a batch that is already there (0: not timed)


def compute_and_end_to_end(
    step: StepFn, iterator: Iterator[Batch], plan: Plan, loop: LoopFn | None = None, n: int = 0
) -> StepTimings:
    """End-to-end steps, then compute-only windows (one cached batch repeated).

    Compute-only comes second: the first tens of steps after compiling run slower while
    TensorFlow's thread pools and allocators settle (measured here: up to twice as slow), and
    the end-to-end run is the warm-up that absorbs it. The end-to-end steps stay contiguous:
    after a pause, the prefetch buffer would be full and the first steps would wait for nothing.

    With ``loop``, compute-only is also timed as compiled loops of ``n`` steps over the cached
    batch, in turns with the single steps: the difference is what each step costs the host in
    Python (taking the batch, dispatching the step), which single-step compute-only counts as
    compute and a loop of steps pays once per call.
    """
    cached = next(iterator)
    for _ in range(max(1, plan.warmup_steps)):  # the first step compiles
        step(cached)
    repeated = _repeated(cached) if loop else None
    calls = max(1, math.ceil(plan.per_rep / n)) if loop else 0
    if loop:
        loop(repeated, n)  # compiles
    waits, computes = end_to_end(step, iterator, plan)
    windows, looped = [], []
    handoffs: list[float] = []
    for _ in range(plan.reps):
        windows.append(_window_of_steps(step, cached, plan.per_rep))
        if loop:
            t, got = _window_of_loops(loop, repeated, calls, n)
            looped.append(t)
            handoffs += got
    log.info(
        "compute-only windows (ms per step): %s; end-to-end compute median %.1f ms%s",
        " ".join(f"{1e3 * w:.1f}" for w in windows),
        1e3 * statistics.median(computes),
        f"; loops of {n} steps over the same batch (ms per step): " + " ".join(f"{1e3 * w:.2f}" for w in looped)
        if looped
        else "",
    )
    loop_s = statistics.median(looped) if looped else 0.0
    handoff = statistics.fmean(handoffs) if handoffs else 0.0
    return StepTimings(statistics.median(windows), tuple(waits), tuple(computes), loop_s, handoff)


def compute_and_end_to_end_looped(loop: LoopFn, iterator: Iterator[Batch], plan: Plan, n: int) -> StepTimings:
    """As :func:`compute_and_end_to_end`, for ``train.steps_per_loop=n``: ``n`` steps per call.

    The loop takes its batches inside the compiled call and times each step's wait for it there
    (``training.trainer``: clock reads around the iterator's get_next, the span TensorBoard books
    as IteratorGetNext). End-to-end times calls over the real iterator; compute-only times the
    same calls over one cached batch repeated (an in-graph iterator of one tensor, always ready),
    whose waits are the hand-off of a batch that is already there. The two are timed in turns,
    window by window, so load that comes and goes weighs on both alike. A step's compute is its
    call's time per step less its wait: a step slowed by the pipeline's threads shows there.
    """
    cached = next(iterator)
    repeated = _repeated(cached)
    calls = max(1, math.ceil(plan.warmup_steps / n))
    for _ in range(calls):  # the first call of each iterator compiles
        loop(repeated, n)
        loop(iterator, n)
    per_window = max(1, plan.per_rep // n)
    ends, windows, waits, computes, handoffs = [], [], [], [], []
    for _ in range(plan.reps):
        t, got = _window_of_loops(loop, iterator, per_window, n)
        ends.append(t)
        waits += got
        computes += [max(0.0, t - w) for w in got]
        t, got = _window_of_loops(loop, repeated, per_window, n)
        windows.append(t)
        handoffs += got
    compute = statistics.median(windows)
    log.info(
        "loops of %d steps, in turns: compute-only windows (ms per step): %s; end-to-end: %s; "
        "waits inside the loop: %.3f ms per step (%.3f ms over the cached batch)",
        n,
        " ".join(f"{1e3 * w:.2f}" for w in windows),
        " ".join(f"{1e3 * w:.2f}" for w in ends),
        1e3 * statistics.fmean(waits),
        1e3 * statistics.fmean(handoffs),
    )
    return StepTimings(compute, tuple(waits), tuple(computes), compute, statistics.fmean(handoffs))


def windowed_mean(values: tuple[float, ...] | list[float], reps: int) -> float:
    """Median over ``reps`` contiguous windows of each window's mean: one hiccup moves one window only."""
    n = max(1, len(values) // max(1, reps))
    windows = [values[i : i + n] for i in range(0, len(values) - n + 1, n)] or [values]
    return statistics.median(sum(w) / len(w) for w in windows)


def _repeated(batch: Batch) -> Iterator[Batch]:
    """One cached batch, endlessly: an in-graph iterator whose next element costs next to nothing."""
    return iter(tf.data.Dataset.from_tensors(batch).repeat())


def _window_of_loops(loop: LoopFn, source: Iterator[Batch], calls: int, n: int) -> tuple[float, list[float]]:
    """Seconds per step of ``calls`` compiled loops of ``n`` steps over ``source``, and each step's
    wait for its batch as the loop timed it (none under op determinism, which leaves them NaN)."""
    laps = timing.Laps()
    out = [loop(source, n) for _ in range(calls)]
    per_step = laps.lap() / (calls * n)
    return per_step, [float(w) for o in out for w in o.waits if not math.isnan(w)]


def _window_of_steps(step: StepFn, batch: Batch, n: int) -> float:
    laps = timing.Laps()
    for _ in range(n):
        step(batch)
    return laps.lap() / n


def end_to_end(step: StepFn, iterator: Iterator[Batch], plan: Plan) -> tuple[list[float], list[float]]:
    """Real steps: for each timed step, seconds waiting for the batch and seconds computing."""
    for _ in range(max(1, plan.warmup_steps)):
        step(next(iterator))
    waits, computes = [], []
    for _ in range(plan.steps):  # split as the training loop splits its steps
        laps = timing.Laps()
        batch = next(iterator)
        waits.append(laps.lap())
        step(batch)
        computes.append(laps.lap())
    return waits, computes


@dataclasses.dataclass(frozen=True)
class Prefix:
    """The pipeline cut after ``name``; ``dataset`` yields batches and never ends."""

    name: str
    dataset: tf.data.Dataset
    fill: tf.data.Dataset | None = None  # iterate once before timing (fills the cache)


def prefixes(
    dataset: Dataset, split: str, options: PipelineOptions, built: Built, *, seed: int, shuffle_buffer: int
) -> list[Prefix]:
    """The training pipeline of one input pipeline cut after each stage of ``ingest.tfdata.STAGES``.

    The same stage list ``ingest.pipeline.build`` runs (the order is written there only).
    Prefixes that end before batching get a plain ``batch`` so every prefix is iterated batch by
    batch (per-element Python overhead would otherwise swamp fast stages), and prefixes that end
    before ``repeat`` are repeated so none runs dry.
    """
    request = Request(
        split=split, batch_size=built.batch_size, training=True, seed=seed, shuffle_buffer=shuffle_buffer, repeat=True
    )
    plan = tfdata.Plan(
        dataset=dataset,
        options=options,
        request=request,
        cached=built.cached,
        ordered=bool(options.deterministic),
        batched=built.batched_read,
    )
    size = built.batch_size
    memory = dataset.in_memory(split)
    ds = memory if memory is not None else tfdata.interleaved(dataset, list(built.files), plan)
    # The read prefix of a batched reader yields blocks of records: timed re-sliced, not re-batched.
    read = (ds.rebatch(size) if built.batched_read else ds).repeat()
    out = [Prefix("read", _measured(read, size, options, batched=built.batched_read))]
    fill, repeated, batched = None, False, False
    for stage in tfdata.STAGES:
        if not stage.when(plan):
            continue
        ds = stage.apply(ds, plan)
        fill = ds if stage.name == "cache" else fill
        repeated = repeated or stage.name == "repeat"
        if stage.name == "batch":
            batched = True
        if stage.profiled and batched:  # batch and the stages after it: timed as they are
            out.append(Prefix(stage.name, stages.with_options(ds, options=options), fill))
        elif stage.profiled:
            cut = ds if repeated else ds.repeat()
            out.append(Prefix(stage.name, _measured(cut, size, options), fill if stage.name != "parse" else None))
    if options.prefetch:
        out.append(Prefix("prefetch", stages.prefetch(stages.with_options(ds, options=options), options=options), fill))
    return out


def _measured(ds: tf.data.Dataset, size: int, options: PipelineOptions, *, batched: bool = False) -> tf.data.Dataset:
    """A prefix batched for timing, under the pipeline's options (``batched``: already in batches).

    The timing ``batch`` must not fuse with the prefix's last map (tf.data's static
    map_and_batch_fusion would run that map on a background thread, hiding its cost behind
    the consumer and moving it onto whichever stage comes next).
    """
    no_fusion = tf.data.Options()
    no_fusion.experimental_optimization.map_and_batch_fusion = False
    return stages.with_options(ds if batched else ds.batch(size), options=options).with_options(no_fusion)


def time_prefixes(prefix_list: list[Prefix], plan: Plan) -> list[StageRate]:
    """Examples/s of each prefix in turn: the median of ``reps`` windows of ``stage_batches`` batches.

    One prefix at a time, its iterator dropped before the next: an idle iterator's parallel
    stages and buffers would fill in the background and steal CPU from (then flatter) the
    windows of the others.
    """
    _fill_caches(prefix_list)
    rates = []
    for p in prefix_list:
        r = timing.measure(
            lambda p=p: iter(p.dataset), elements=plan.stage_batches, reps=plan.reps, warmup=1, size_of=batch_examples
        )
        log.info("prefix %-12s %9.0f examples/s (first batch %.2f s)", f"+{p.name}", r.median, r.first_s)
        rates.append(StageRate(name=p.name, examples_per_s=r.median, first_s=r.first_s))
    return rates


def _fill_caches(prefix_list: list[Prefix]) -> None:
    """One pass over each cache stage completes it; every prefix built on it then reads it warm."""
    done: set[int] = set()
    for p in prefix_list:
        if p.fill is None or id(p.fill) in done:
            continue
        t0 = time.perf_counter()
        for _ in p.fill.batch(1024):
            pass
        done.add(id(p.fill))
        log.info("filled the cache in %.1f s (the first epoch is not in the prefix figures)", time.perf_counter() - t0)
