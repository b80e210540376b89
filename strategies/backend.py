"""The backend protocol every strategy offers, its options, and the registry over them.

One training loop drives every backend. A backend owns: the scope variables are made in,
how a host batch becomes per-replica values (:meth:`Backend.distribute`), running a replica
function (:meth:`Backend.run`), reducing results, and computing a replica's loss and
gradients (:meth:`Backend.loss_and_grads`: a plain GradientTape by default; Horovod wraps
it, pipeline parallelism splits it into stages and micro-batches).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from stoker.registry import Registry
from strategies.options import STRATEGIES, StrategyOptions
from strategies.topology import Topology

__all__ = ["STRATEGIES", "Backend", "StrategyOptions"]


class Backend:
    """Base backend: one device, no distribution. Subclasses override what differs."""

    # Ranks may leave and join a live run (Horovod elastic): checkpoints are restored without a
    # collective, only the chief saves, and the loop is re-entered after each membership change.
    elastic = False

    def __init__(self, options: StrategyOptions) -> None:
        self.options = options
        self.topology = Topology()

    @property
    def num_replicas(self) -> int:
        return self.topology.replicas

    @property
    def is_chief(self) -> bool:
        return self.topology.is_chief

    def scope(self) -> contextlib.AbstractContextManager:
        """Where model and optimizer variables are created."""
        return contextlib.nullcontext()

    def input_context(self) -> tf.distribute.InputContext:
        """This worker's input pipeline among all of them (for sharding)."""
        t = self.topology
        return tf.distribute.InputContext(t.workers, t.worker_index, t.replicas)

    def distribute(self, batch: Any) -> Any:
        """Host batch (this worker's part of the global batch) to per-replica values."""
        return batch

    def run(self, fn: Callable[..., Any], args: tuple = ()) -> Any:
        """Run ``fn`` on every local replica (replica context)."""
        return fn(*args)

    def reduce_sum(self, value: Any) -> tf.Tensor:
        """Sum of a per-replica value over all replicas of all workers (cross-replica)."""
        return value

    def loss_divisor(self, global_batch: int) -> int:
        """Examples a replica's summed loss is divided by, so that reduced gradients are the mean."""
        return global_batch

    def loss_and_grads(
        self, model: tf.keras.Model, loss_fn: Callable[[Any, tf.Tensor], tf.Tensor], batch: Any
    ) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        """Replica: (summed loss / divisor, logits, gradients of the trainable variables)."""
        x, y = batch
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(y, logits)
        return loss, logits, tape.gradient(loss, model.trainable_variables)

    def check_input(self, dataset: tf.data.Dataset) -> None:
        """Host, once, before training: raise when this backend cannot take ``dataset``'s batches."""

    def check_model(self, model: tf.keras.Model) -> None:
        """Host, once, before training: raise when this backend cannot train ``model`` (any Keras model here)."""

    def gather_ints(self, values: np.ndarray) -> np.ndarray:
        """Host, collective: every worker's int64 vector (same length on all), stacked [workers, n]."""
        return np.asarray(values, np.int64)[None]

    def after_first_step(self, model: tf.keras.Model, optimizer: Any) -> None:
        """Host, once: e.g. Horovod broadcasts rank 0's variables."""

    def run_loop(self, loop: Any) -> Any:
        """Host, every worker: run the training loop (``loop.train()``) and leave together. An elastic
        backend re-enters it after a membership change (``strategies.horovod_elastic``)."""
        result = loop.train()
        if self.topology.workers > 1:
            self.gather_ints(np.zeros(1, np.int64))  # barrier: peers leave together, no heartbeat errors
        return result

    def at_boundary(self, step: int, loop: Any) -> None:
        """Host, every worker, after step ``step`` (and its checkpoint): an elastic backend commits here."""

    def predict(self, model: tf.keras.Model, x: tf.Tensor) -> tf.Tensor:
        """Host/local: forward pass for evaluation."""
        return model(x, training=False)

    def extra_metrics(self) -> dict[str, Any]:
        """Backend-specific figures for metrics.json (e.g. pipeline bubble)."""
        return {}

    def shutdown(self) -> None:
        """Release what the backend started."""


BACKENDS: Registry[Callable[[StrategyOptions], Backend]] = Registry("strategy")


@contextlib.contextmanager
def no_op() -> Iterator[None]:
    yield
