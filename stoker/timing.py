"""The one timer: the controller's step timing, the profiler, the benchmarks, the tf.data
service comparison and the pipeline-parallel stage timings all measure with it.

Raw measurement only (analysis lives elsewhere): time to first element kept apart from the
steady state, warm-up before timing, and the median of repeated timed windows with min/max.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Items per second over repeated windows, and the time to the first item."""

    first_s: float  # time to the first element (startup, file opening, graph building)
    median: float  # items/s, median over repetitions
    low: float  # items/s, slowest repetition
    high: float  # items/s, fastest repetition
    reps: int
    items_per_rep: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _count(element: Any, size_of: Callable[[Any], int] | None) -> int:
    return size_of(element) if size_of else 1


def measure(
    make_iter: Callable[[], Iterator[Any]],
    *,
    elements: int,
    reps: int = 5,
    warmup: int = 1,
    size_of: Callable[[Any], int] | None = None,
    warmup_elements: int = 0,
) -> Throughput:
    """Time ``reps`` windows of ``elements`` elements from one iterator made by ``make_iter``.

    The first element is timed alone; ``warmup`` windows (and ``warmup_elements`` more
    elements) run untimed (filling caches, letting AUTOTUNE settle); ``size_of(element)``
    converts elements to items (e.g. batch size).
    """
    it = make_iter()
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    for _ in range(warmup_elements):
        next(it)
    for _ in range(warmup):
        for _ in range(elements):
            next(it)
    rates, items = [], 0
    for _ in range(reps):
        items = 0
        t0 = time.perf_counter()
        for _ in range(elements):
            items += _count(next(it), size_of)
        rates.append(items / (time.perf_counter() - t0))
    return Throughput(first, statistics.median(rates), min(rates), max(rates), reps, items)


def time_calls(fn: Callable[[], Any], *, calls: int, reps: int = 5, warmup: int = 1) -> Throughput:
    """Calls per second of ``fn`` (e.g. a training step on a cached batch)."""

    def forever() -> Iterator[Any]:
        while True:
            yield fn()

    return measure(forever, elements=calls, reps=reps, warmup=warmup)


class Laps:
    """Consecutive intervals on one clock: :meth:`lap` returns the seconds since the last lap."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        return seconds
