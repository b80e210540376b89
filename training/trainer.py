"""The inner loop: one compiled train step and one eval step, for every backend.

``Trainer.train_step`` runs in a ``tf.function`` on the host (cross-replica context); it
calls ``backend.run`` on the replica step, which computes the loss and gradients through
``backend.loss_and_grads`` (a GradientTape; Horovod and pipeline parallelism adapt it) and
applies them. Loss and correct counts come back summed over all replicas.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

from strategies.backend import Backend


class Trainer:
    """Compiled steps for one model, optimizer and backend.

    Args:
        backend: the distribution backend.
        model: a model built in ``backend.scope()``.
        optimizer: its optimizer, built on the model's variables.
        global_batch: examples per step over all replicas.
    """

    def __init__(self, backend: Backend, model: keras.Model, optimizer: Any, *, global_batch: int) -> None:
        self.backend, self.model, self.optimizer = backend, model, optimizer
        self.divisor = float(backend.loss_divisor(global_batch))
        self.scaled = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
        self._train = tf.function(self._train_step)
        self._eval = tf.function(self._eval_step, reduce_retracing=True)

    def loss(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """Replica: summed cross-entropy divided so that reduced gradients are the global mean."""
        logits = tf.cast(logits, tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
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

    def _eval_step(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = tf.cast(self.backend.predict(self.model, x), tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), y), tf.float32))
        return tf.reduce_sum(per_example), correct

    def evaluate(self, dataset: tf.data.Dataset, feature_key: str, label_key: str) -> dict[str, float]:
        """Host, this worker only (no collectives): loss and accuracy over one pass of ``dataset``."""
        total_loss = total_correct = count = 0.0
        for batch in dataset:
            loss, correct = self._eval(batch[feature_key], batch[label_key])
            total_loss += float(loss)
            total_correct += float(correct)
            count += int(batch[label_key].shape[0])
        if not count:
            return {"loss": float("nan"), "accuracy": float("nan"), "examples": 0}
        return {"loss": total_loss / count, "accuracy": total_correct / count, "examples": int(count)}
