"""The inner loop: one compiled train step and one eval step, for every backend.

``Trainer.train_step`` runs in a ``tf.function`` on the host (cross-replica context); it
calls ``backend.run`` on the replica step, which computes the loss and gradients through
``backend.loss_and_grads`` (a GradientTape; Horovod and pipeline parallelism adapt it) and
applies them. Loss and correct counts come back summed over all replicas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow.python.framework import config as tf_config

from strategies.backend import Backend
from training import evaluation


@dataclasses.dataclass(frozen=True)
class Loop:
    """What one :meth:`Trainer.train_loop` call returns (host numpy, one entry per step)."""

    losses: np.ndarray  # [steps] mean loss of each step
    correct: np.ndarray  # [steps] correct predictions of each step, over all replicas
    ids: np.ndarray | None  # [steps, local batch] example ids, when asked for
    waits: np.ndarray  # [steps] seconds each step waited inside the call for its batch (timed in the graph)


class Trainer:
    """Compiled steps for one model, optimizer and backend.

    Args:
        backend: the distribution backend.
        model: a model built in ``backend.scope()``.
        optimizer: its optimizer, built on the model's variables.
        global_batch: examples per step over all replicas.
        class_weights: a loss weight per class (``train.loss_weights``); () weighs every example 1.
    """

    def __init__(
        self,
        backend: Backend,
        model: keras.Model,
        optimizer: Any,
        *,
        global_batch: int,
        class_weights: tuple[float, ...] = (),
    ) -> None:
        self.backend, self.model, self.optimizer = backend, model, optimizer
        # train.loss_weights: each example's loss times its class's weight (Keras' class_weight).
        self.class_weights = tf.constant(class_weights, tf.float32) if class_weights else None
        self.global_batch = global_batch
        self.scaled = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
        self.retrace()

    def retrace(self) -> None:
        """Host: (re)make the compiled steps for the backend's topology (an elastic run's rank count
        changed: the loss divisor and the collectives traced into the steps change with it)."""
        self.divisor = float(self.backend.loss_divisor(self.global_batch))
        self._train = tf.function(self._train_step)
        self._loop = tf.function(self._loop_steps)
        self._eval = tf.function(self._eval_step, reduce_retracing=True)

    def loss(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """Replica: summed cross-entropy divided so that reduced gradients are the global mean."""
        logits = tf.cast(logits, tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        if self.class_weights is not None:
            per_example = per_example * tf.gather(self.class_weights, labels)
        loss = tf.reduce_sum(per_example) / self.divisor
        return self.optimizer.get_scaled_loss(loss) if self.scaled else loss

    def _replica_step(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Replica: forward, backward, update; returns (loss share, correct predictions)."""
        loss, logits, grads = self.backend.loss_and_grads(self.model, self.loss, (x, y))
        if self.scaled:
            grads = self.optimizer.get_unscaled_gradients(grads)
            loss = loss / self.optimizer.loss_scale
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), y), tf.float32))
        return loss, correct

    def _train_step(self, x: Any, y: Any) -> tuple[tf.Tensor, tf.Tensor]:
        loss, correct = self.backend.run(self._replica_step, args=(x, y))
        return self.backend.reduce_sum(loss), self.backend.reduce_sum(correct)

    def train_step(self, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """Host: one step on this worker's part of the global batch; (mean loss, correct count)."""
        x, y = self.backend.distribute(batch)
        return self._train(x, y)

    def train_loop(self, iterator: Any, steps: int, feature_key: str, label_key: str, ids_key: str = "") -> Loop:
        """Host: ``steps`` steps in one compiled call (``train.steps_per_loop``), batches taken from
        ``iterator`` inside it; each step's mean loss, correct count and (with ``ids_key``) example ids.

        The batches are split over replicas inside the function as :meth:`train_step` splits them
        on the host, so a loop runs the same steps in the same order, without a Python round trip
        per step (Orbit's ``steps_per_loop``, Keras' ``steps_per_execution``)."""
        losses, correct, ids, waits = self._loop(
            iterator, tf.constant(steps, tf.int32), feature_key, label_key, ids_key
        )
        return Loop(losses.numpy(), correct.numpy(), ids.numpy() if ids_key else None, waits.numpy())

    def _loop_steps(self, iterator, steps, feature_key: str, label_key: str, ids_key: str):
        losses = tf.TensorArray(tf.float32, size=steps)
        correct = tf.TensorArray(tf.float32, size=steps)
        ids = tf.TensorArray(tf.int64, size=steps if ids_key else 0, dynamic_size=not ids_key)
        waits = tf.TensorArray(tf.float64, size=steps)
        for i in tf.range(steps):
            # One iteration at a time: collectives (Horovod's allreduce, MultiWorkerMirrored's) must
            # run in the same order on every worker, which overlapping iterations would not keep.
            tf.autograph.experimental.set_loop_options(parallel_iterations=1)
            batch, waited = _timed_next(iterator)
            x, y = self.backend.distribute((batch[feature_key], batch[label_key]))
            loss, hits = self._train_step(x, y)
            losses = losses.write(i, tf.cast(loss, tf.float32))
            correct = correct.write(i, tf.cast(hits, tf.float32))
            waits = waits.write(i, waited)
            if ids_key:
                ids = ids.write(i, tf.cast(batch[ids_key], tf.int64))
        return (
            losses.stack(),
            correct.stack(),
            ids.stack() if ids_key else tf.zeros([0, 0], tf.int64),
            waits.stack(),
        )

    def _eval_step(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        """This worker's devices, no collectives: one batch's summed loss, correct count and confusion
        matrix (rows true class, columns predicted), and each example's loss and correctness."""
        # The per-example tensors are always returned and read by the host only when slicing: that
        # cost nothing measurable, while a Python argument picking a variant cost ~5% of a small eval.
        logits = tf.cast(self.backend.predict(self.model, x), tf.float32)
        y = tf.cast(y, tf.int64)
        losses = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        predicted = tf.argmax(logits, -1, output_type=tf.int64)
        hits = tf.equal(predicted, y)
        classes = logits.shape[-1] or tf.shape(logits)[-1]
        return {
            "loss": tf.reduce_sum(losses),
            "correct": tf.reduce_sum(tf.cast(hits, tf.float32)),
            "confusion": tf.math.confusion_matrix(y, predicted, num_classes=classes, dtype=tf.int64),
            "losses": losses,
            "hits": hits,
        }

    def evaluate(
        self,
        dataset: tf.data.Dataset,
        feature_key: str,
        label_key: str,
        *,
        num_classes: int,
        label_names: Sequence[str] | None = None,
        slice_key: str = "",
    ) -> dict[str, Any]:
        """Host, this worker only (no collectives): one pass of ``dataset``.

        Returns loss, accuracy, examples, the confusion matrix, per-class precision and recall,
        balanced accuracy (:func:`training.evaluation.class_metrics`) and, with ``slice_key``, the
        same pass's accuracy and loss per value of that batch feature (``slices``).
        """
        if slice_key:
            evaluation.check_slice_feature(dataset.element_spec, slice_key)
        slices = evaluation.Slices(slice_key) if slice_key else None
        confusion = np.zeros((num_classes, num_classes), np.int64)
        total_loss = total_correct = 0.0
        count = 0
        for batch in dataset:
            out = self._eval(batch[feature_key], batch[label_key])
            total_loss += float(out["loss"])
            total_correct += float(out["correct"])
            batch_confusion = out["confusion"].numpy()
            if batch_confusion.shape != confusion.shape:
                raise ValueError(
                    f"the model gives {batch_confusion.shape[0]} logits per example but the dataset has "
                    f"{num_classes} classes; build the model with num_classes={num_classes}"
                )
            confusion += batch_confusion
            count += int(batch[label_key].shape[0])
            if slices is not None:
                slices.add(batch[slice_key].numpy(), out["losses"].numpy(), out["hits"].numpy())
        if count:
            result = {"loss": total_loss / count, "accuracy": total_correct / count, "examples": count}
        else:
            result = {"loss": float("nan"), "accuracy": float("nan"), "examples": 0}
        result.update(evaluation.class_metrics(confusion, evaluation.class_names(label_names, num_classes)))
        if slices is not None:
            result["slices"] = slices.result()
        return result


def _timed_next(iterator: Any) -> tuple[Any, tf.Tensor]:
    """In a compiled loop: the next batch and the seconds taken to get it (as the host times
    ``next()`` around a single step; TensorBoard books the same span as IteratorGetNext).

    Two clock reads bracket the iterator's get_next, and the batch is handed on only after the
    second: without that, the read would queue behind the step's first kernels on a busy host and
    count compute as waiting (measured: 0.7 ms of a 2.4 ms step). Op determinism
    (``train.deterministic``) forbids reading the clock in a graph: the wait is NaN (not timed)."""
    if tf_config.is_op_determinism_enabled():  # not in tf.config's public names (TF 2.15)
        return next(iterator), tf.constant(float("nan"), tf.float64)
    start = tf.timestamp()
    with tf.control_dependencies([start]):
        batch = next(iterator)
    with tf.control_dependencies(tf.nest.flatten(batch)):
        got = tf.timestamp()
    with tf.control_dependencies([got]):
        batch = tf.nest.map_structure(tf.identity, batch)
    return batch, got - start
