"""A compiled loop of steps (``Trainer.train_loop``) times each step's wait for its batch in the
graph: a slow source is booked as waiting, a slow step as compute, never the other way round.

Under op determinism the clock cannot be read in a graph and the waits are NaN: that path is
held by ``test_steps_per_loop`` (its looped steps' waits are null in ``metrics.json``).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from strategies import make_backend
from strategies.options import StrategyOptions
from training.trainer import Trainer

BATCH, WIDTH = 128, 1024
SLEEP_S = 0.05  # the slow source: each batch takes at least this long to make


def _trainer() -> Trainer:
    """Mirrored over the 2 logical CPUs (the default run's backend), a model of a few milliseconds
    per step (two 1024-wide layers). Here an unheld clock read after get_next came 3.6 ms late
    (of a 6.3 ms step) where held it read 0.09 ms."""
    backend = make_backend(StrategyOptions(name="mirrored", devices=2))
    with backend.scope():
        inputs = keras.Input((WIDTH,))
        hidden = keras.layers.Dense(WIDTH, activation="relu")(keras.layers.Dense(WIDTH, activation="relu")(inputs))
        model = keras.Model(inputs, keras.layers.Dense(4)(hidden))
        optimizer = keras.optimizers.SGD(0.01)
    return Trainer(backend, model, optimizer, global_batch=BATCH)


def _batch() -> dict[str, tf.Tensor]:
    rng = np.random.default_rng(0)
    return {
        "x": tf.constant(rng.random((BATCH, WIDTH), np.float32)),
        "label": tf.constant(rng.integers(0, 4, BATCH), tf.int64),
    }


def _steps(trainer: Trainer, dataset: tf.data.Dataset, calls: int, n: int) -> tuple[list[float], float]:
    """Each step's wait as the loop timed it, and the median seconds per step of the calls."""
    it = iter(dataset)
    trainer.train_loop(it, n, "x", "label")  # compiles
    waits, per_step = [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        out = trainer.train_loop(it, n, "x", "label")
        per_step.append((time.perf_counter() - t0) / n)
        waits += [float(w) for w in out.waits]
    return waits, statistics.median(per_step)


def test_a_slow_source_is_waiting_and_a_slow_step_is_compute():
    trainer = _trainer()
    batch = _batch()

    # A ready batch (one tensor repeated): the step's time is compute; its wait is the iterator's
    # hand-off alone. Unheld, the second clock read would queue behind the step's first kernels.
    waits, step_s = _steps(trainer, tf.data.Dataset.from_tensors(batch).repeat(), calls=3, n=8)
    assert all(w >= 0 for w in waits), waits
    assert statistics.median(waits) < 0.05 * step_s, (statistics.median(waits), step_s)

    # A source that sleeps 50 ms per batch, made one at a time: every step after the first few
    # (which a background prefetch may have ready) waits for it.
    def slow(i):
        time.sleep(SLEEP_S)
        return i

    source = (
        tf.data.Dataset.range(1 << 20)
        .map(lambda i: tf.py_function(slow, [i], tf.int64))
        .map(lambda i: dict(batch, label=batch["label"] + 0 * i))
    )
    waits, step_s = _steps(trainer, source, calls=2, n=6)
    assert statistics.median(waits) > 0.6 * SLEEP_S, waits
    assert step_s >= SLEEP_S * 0.9, step_s  # the loop ran at the source's pace: the waits are real
    assert statistics.median(waits) > 0.5 * step_s, (waits, step_s)
