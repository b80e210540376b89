"""Horovod backend: one replica per process, gradients averaged by ``DistributedGradientTape``.

Every distribution-specific line of Horovod lives here and is easy to spot: ``hvd.init``,
the wrapped tape, the broadcast of rank 0's variables after the first step, and
``hvd.allreduce`` for reported figures. Processes come from ``horovodrun --gloo`` (see
``strategies.launch``); on CPU each rank drives one device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from strategies import devices
from strategies.backend import BACKENDS, Backend, StrategyOptions
from strategies.topology import Topology

log = logging.getLogger(__name__)


def _hvd():
    """``horovod.tensorflow``, imported on first use (it loads a native library)."""
    try:
        import horovod.tensorflow as hvd
    except ImportError as err:
        raise RuntimeError(
            f"STRATEGY=horovod needs Horovod built with TensorFlow and Gloo ({err}); run `make setup`"
        ) from None
    return hvd


@BACKENDS.register("horovod")
class Horovod(Backend):
    """Data parallel over Horovod ranks (``horovodrun -np NP``), one device each."""

    def __init__(self, options: StrategyOptions) -> None:
        super().__init__(options)
        self.hvd = _hvd()
        self.hvd.init()
        size, rank = self.hvd.size(), self.hvd.rank()
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:  # one GPU per rank, picked by the local rank
            tf.config.set_visible_devices(gpus[self.hvd.local_rank() % len(gpus)], "GPU")
        self.device = devices.configure(1)[0]
        self.topology = Topology(workers=size, worker_index=rank, replicas=size, local_replicas=1)
        log.info("horovod: rank %d of %d", rank, size)

    def loss_divisor(self, global_batch: int) -> int:
        """Each rank's loss is its local mean: the tape *averages* gradients over ranks."""
        return self.topology.local_batch(global_batch)

    def loss_and_grads(self, model, loss_fn: Callable[[Any, tf.Tensor], tf.Tensor], batch: Any):
        """Replica (this rank): gradients averaged over ranks by ``DistributedGradientTape``.

        The loss returned is this rank's share of the global mean (local mean / ranks), so
        that :meth:`reduce_sum` of it is the global mean, as on every other backend.
        """
        x, y = batch
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(y, logits)
        tape = self.hvd.DistributedGradientTape(tape)
        grads = tape.gradient(loss, model.trainable_variables)
        return loss / self.topology.replicas, logits, grads

    def reduce_sum(self, value: Any) -> tf.Tensor:
        """Cross-replica: sum over ranks (a collective: every rank must call it)."""
        return self.hvd.allreduce(value, op=self.hvd.Sum)

    def gather_ints(self, values: np.ndarray) -> np.ndarray:
        """Host, collective: every rank's vector, stacked [ranks, n]."""
        return self.hvd.allgather(tf.constant(np.asarray(values, np.int64)[None])).numpy()

    def after_first_step(self, model, optimizer) -> None:
        """Host, once: every rank takes rank 0's model and optimizer variables."""
        self.hvd.broadcast_variables(model.variables, root_rank=0)
        self.hvd.broadcast_variables(optimizer.variables, root_rank=0)

    def shutdown(self) -> None:
        self.hvd.shutdown()
