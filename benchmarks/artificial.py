"""The tf.data performance guide's sleep-based ``ArtificialDataset`` rows, to compare orders.

The guide (tensorflow.org/guide/data_performance) times two epochs of a generator that sleeps
30 ms to "open a file" and 15 ms per "read", with a 10 ms "training step" per element, and
a ``py_function`` map that sleeps 30 ms. Its rows are rebuilt here as written there; each
figure is seconds per ``benchmark()`` call, so lower is better.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import tensorflow as tf

from benchmarks import rates
from benchmarks.config import BenchConfig
from benchmarks.runner import row
from stoker import timing

AUTOTUNE = tf.data.AUTOTUNE


def artificial(num_samples: int = 3) -> tf.data.Dataset:
    """The guide's ``ArtificialDataset``: 30 ms to open, then 15 ms per sample."""

    def generate(n):
        time.sleep(0.03)
        for i in range(n):
            time.sleep(0.015)
            yield (i,)

    return tf.data.Dataset.from_generator(generate, output_signature=tf.TensorSpec([1], tf.int64), args=(num_samples,))


def mapped(s: tf.Tensor) -> tf.Tensor:
    """The guide's ``mapped_function``: a 30 ms py_function."""
    tf.py_function(lambda: time.sleep(0.03), [], ())
    return s


def guide_benchmark(ds: tf.data.Dataset, epochs: int = 2, step_s: float = 0.01) -> None:
    """The guide's ``benchmark()``: iterate ``epochs`` times with a sleep per element."""
    for _ in range(epochs):
        for _ in ds:
            time.sleep(step_s)


def fast_benchmark(ds: tf.data.Dataset, epochs: int = 2) -> None:
    """The guide's ``fast_benchmark()``: iterate without a training step."""
    for _ in range(epochs):
        for _ in ds:
            pass


AA_REPEAT = "naive (A/A repeat)"


def cases() -> list[tuple[str, Callable[[], None]]]:
    """(row name, one timed call) in the guide's order."""
    fast = tf.data.Dataset.range(10000)
    inc = lambda x: x + 1  # noqa: E731 - the guide's `increment`
    return [
        ("naive", lambda: guide_benchmark(artificial())),
        ("prefetch", lambda: guide_benchmark(artificial().prefetch(AUTOTUNE))),
        ("sequential interleave", lambda: guide_benchmark(tf.data.Dataset.range(2).interleave(lambda _: artificial()))),
        (
            "parallel interleave",
            lambda: guide_benchmark(
                tf.data.Dataset.range(2).interleave(lambda _: artificial(), num_parallel_calls=AUTOTUNE)
            ),
        ),
        ("sequential map", lambda: guide_benchmark(artificial().map(mapped))),
        ("parallel map", lambda: guide_benchmark(artificial().map(mapped, num_parallel_calls=AUTOTUNE))),
        ("cache (5 epochs)", lambda: guide_benchmark(artificial().map(mapped).cache(), epochs=5)),
        ("scalar map, then batch", lambda: fast_benchmark(fast.map(inc).batch(256))),
        ("batch, then vectorized map", lambda: fast_benchmark(fast.batch(256).map(inc))),
        (AA_REPEAT, lambda: guide_benchmark(artificial())),  # the first case again: the A/A pair
    ]


def rows(cfg: BenchConfig) -> list[dict]:
    """Seconds per call of every guide case (median of ``cfg.reps`` after a warm-up call)."""
    out = []
    for name, call in cases():
        tp = timing.time_calls(call, calls=1, reps=cfg.reps, warmup=cfg.warmup)
        out.append(
            row(
                "artificial",
                name,
                tp,
                unit="calls/s",
                seconds=round(1 / tp.median, 3),
                seconds_low=round(1 / tp.high, 3),
                seconds_high=round(1 / tp.low, 3),
            )
        )
    return out


def noise(rows: list[dict]) -> float:
    """Relative A/A spread of the artificial rows (``naive`` against its repeat at the end)."""
    by = {r["name"]: r["seconds"] for r in rows}
    return rates.spread(by["naive"], by[AA_REPEAT])
