"""Steady-state rates of pipelines and loaders, all through ``stoker.timing.measure``.

Every row of a suite gets the same work before timing: one whole epoch of the suite's
training split (``warm_examples``), timed and kept as the row's *first-epoch* figure (for a
row with a cache this is the cache-fill epoch), then ``cfg.warmup`` untimed windows, then the
timed windows. A suite also measures one configuration twice (an A/A pair): the relative
spread of the two is the noise floor under which a difference is no measurable difference.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.config import BenchConfig
from stoker import timing


def batch_size(batch: Any) -> int:
    """Examples in a batch: the leading dimension of its first tensor (dict, tuple or tensor)."""
    while isinstance(batch, dict | list | tuple):
        batch = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return int(batch.shape[0])


def ratio(a: float, b: float) -> float:
    """a / b rounded for tables (0 when b is 0)."""
    return round(a / b, 3) if b else 0.0


def spread(a: float, b: float) -> float:
    """Relative difference of two measurements of one configuration: |a - b| / mean."""
    return round(abs(a - b) / ((a + b) / 2), 3) if a + b else 0.0


def differs(value: float, reference: float, noise: float) -> bool:
    """True when ``value`` and ``reference`` differ by more than the relative ``noise``."""
    return abs(value - reference) > noise * reference


Entry = tuple[Callable[[], Iterator[Any]], Callable[[Any], int]]  # make_iter, size_of (examples per element)
WINDOW_S = 1.5  # seconds of the reference row per timed window in the suites that size them (timed_window)
PASSES = 4  # forward, reverse, forward, reverse: two windows each (reps=5)


def entry(ds: Any) -> Entry:
    """The :data:`Entry` of a tf.data dataset of batches."""
    return (lambda: iter(ds)), batch_size


@dataclasses.dataclass(frozen=True)
class Measured:
    """One row: pooled timed windows, and the examples/s of its first (warm-up) epoch."""

    windows: timing.Throughput
    first_epoch: float  # examples/s over the first warm_examples, median over passes
    warm_examples: int  # examples read before the first timed window (the same for every row)

    @property
    def median(self) -> float:
        return self.windows.median

    def as_dict(self) -> dict[str, Any]:
        return dict(
            self.windows.as_dict(), first_epoch_per_s=round(self.first_epoch, 1), warm_examples=self.warm_examples
        )


def _epoch(it: Iterator[Any], examples: int, size_of: Callable[[Any], int]) -> float:
    """Examples/s of reading ``examples`` examples from ``it`` (at least one element)."""
    done, t0 = 0, time.perf_counter()
    while done < examples:
        done += size_of(next(it))
    return done / (time.perf_counter() - t0)


def timed_window(entry: Entry, *, warm_examples: int, least: int, most: int, seconds: float = WINDOW_S) -> int:
    """Elements per timed window: ``seconds`` of the pipeline of ``entry`` (timed for one second after one
    epoch of ``warm_examples``, which fills any cache), at least ``least`` and at most ``most``.

    Windows of half a second gave A/A spreads of 9-21% in the auto suite; every row of a suite
    then reads the same number of elements per window."""
    make_iter, size_of = entry
    it = make_iter()
    _epoch(it, warm_examples, size_of)
    began, elements = time.perf_counter(), 0
    while time.perf_counter() - began < 1.0:
        next(it)
        elements += 1
    per_s = elements / (time.perf_counter() - began)
    del it
    gc.collect()
    return max(least, min(round(seconds * per_s), most))


def one_by_one(
    entries: list[Callable[[], Entry]],
    cfg: BenchConfig,
    *,
    warm_examples: int,
    window: int | None = None,
    passes: int = 2,
) -> list[Measured]:
    """Rates of several pipelines, one at a time, in ``passes`` passes: forward, then in reverse, in turns.

    ``entries`` are factories of (make_iter, size_of): a pipeline (and any cache it fills)
    exists only while it is measured, and is warmed up again in each pass: one epoch of
    ``warm_examples`` examples (timed apart), then ``cfg.warmup`` windows, for every row alike.
    Each pass times ``ceil(reps / passes)`` windows of ``window`` elements per pipeline; a figure
    is the median of every pass's windows, so load that drifts during the suite weighs on every
    row alike (an even number of passes cancels a steady drift).

    Pipelines are not kept alive side by side on purpose: an idle tf.data pipeline keeps
    filling its AUTOTUNE prefetch buffer (which grows each time a timed window finds it
    empty), so windows taken in turns read buffered batches, and a dozen idle pipelines
    held many GB here.
    """
    window = window or cfg.window_batches
    per_pass = math.ceil(cfg.reps / passes)
    firsts: list[list[float]] = [[] for _ in entries]
    epochs: list[list[float]] = [[] for _ in entries]
    windows: list[list[timing.Throughput]] = [[] for _ in entries]
    for p in range(passes):
        for i in range(len(entries)) if p % 2 == 0 else reversed(range(len(entries))):
            make_iter, size_of = entries[i]()
            it = make_iter()
            t0 = time.perf_counter()
            next(it)
            firsts[i].append(time.perf_counter() - t0)
            epochs[i].append(_epoch(it, warm_examples, size_of))
            for rep in range(per_pass):  # one window per call, so both passes' windows pool
                tp = timing.measure(
                    lambda it=it: it, elements=window, reps=1, warmup=cfg.warmup if rep == 0 else 0, size_of=size_of
                )
                windows[i].append(tp)
            del it, make_iter, size_of
            gc.collect()  # free the finished pipeline (threads, buffers, cache) before the next one
    return [
        Measured(
            timing.Throughput(
                statistics.median(f),
                statistics.median(t.median for t in ws),
                min(t.median for t in ws),
                max(t.median for t in ws),
                len(ws),
                ws[0].items_per_rep,
            ),
            statistics.median(e),
            warm_examples,
        )
        for f, e, ws in zip(firsts, epochs, windows, strict=True)
    ]
