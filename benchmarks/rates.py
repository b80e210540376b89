"""Steady-state rates of pipelines and loaders, all through ``profiles.timing.measure``."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.config import BenchConfig
from profiles import timing


def batch_size(batch: Any) -> int:
    """Examples in a batch: the leading dimension of its first tensor (dict, tuple or tensor)."""
    while isinstance(batch, dict | list | tuple):
        batch = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return int(batch.shape[0])


def warmup_windows(cfg: BenchConfig, *, epoch_examples: int = 0) -> int:
    """Untimed windows: ``cfg.warmup``, or enough to pass one whole epoch (to fill a cache)."""
    if not epoch_examples:
        return cfg.warmup
    return max(cfg.warmup, math.ceil(epoch_examples / (cfg.window_batches * cfg.batch)) + 1)


def batches(make_iter: Callable[[], Iterator[Any]], cfg: BenchConfig, *, window: int | None = None,
            epoch_examples: int = 0, size_of: Callable[[Any], int] = batch_size) -> timing.Throughput:
    """Examples/s over ``cfg.reps`` windows of ``window`` batches (``cfg.window_batches``)."""
    return timing.measure(make_iter, elements=window or cfg.window_batches, reps=cfg.reps,
                          warmup=warmup_windows(cfg, epoch_examples=epoch_examples), size_of=size_of)


def ratio(a: float, b: float) -> float:
    """a / b rounded for tables (0 when b is 0)."""
    return round(a / b, 3) if b else 0.0


def side_by_side(entries: list[tuple[Callable[[], Iterator[Any]], Callable[[Any], int], int]], cfg: BenchConfig, *,
                 window: int | None = None) -> list[timing.Throughput]:
    """Rates of several pipelines measured in turns: one timed window of each per round.

    ``entries`` are (make_iter, size_of, epoch_examples). Every iterator is made once and
    kept; round 0 times its first batch and warms it up (over a whole epoch when
    ``epoch_examples`` is set, to fill a cache), then ``cfg.reps`` rounds time one window of
    each in turn. Load from other work then falls on every row alike, so the ratios between
    rows hold even when absolute rates drift on a shared machine. A pipeline fills its
    buffers while the others are timed, so each timed window follows ``cfg.rewarm_batches``
    (or a quarter window) untimed batches that empty them back to the steady state.
    """
    window = window or cfg.window_batches
    iters, firsts, rates = [], [], [[] for _ in entries]
    for make_iter, size_of, epoch in entries:
        it = make_iter()
        tp = timing.measure(lambda it=it: it, elements=window, reps=1, size_of=size_of,
                            warmup=warmup_windows(cfg, epoch_examples=epoch))
        iters.append(it)
        firsts.append(tp.first_s)
    for _ in range(cfg.reps):
        for i, (it, (_, size_of, _)) in enumerate(zip(iters, entries, strict=True)):
            for _ in range(max(cfg.rewarm_batches, window // 4)):
                next(it)
            rates[i].append(timing.measure(lambda it=it: it, elements=window, reps=1, warmup=0, size_of=size_of))
    return [timing.Throughput(first, statistics.median(t.median for t in rs), min(t.median for t in rs),
                              max(t.median for t in rs), len(rs), rs[0].items_per_rep)
            for first, rs in zip(firsts, rates, strict=True)]
