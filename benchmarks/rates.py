"""Steady-state rates of pipelines and loaders, all through ``profiles.timing.measure``."""

from __future__ import annotations

import math
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
