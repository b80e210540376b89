"""GPipe backend: stage split, bubble, gradients equal to the unsplit model's (with and without
REMAT), and each stage's backward placed on its own device. In-process, 2 logical CPUs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from strategies.backend import StrategyOptions
from strategies.pipeline_parallel import Pipeline, bubble_fraction, split_layers
from training import models


def test_split_layers_is_consecutive_and_covers_every_layer():
    layers = list(range(7))
    groups = split_layers(layers, 2)
    assert groups == [[0, 1, 2], [3, 4, 5, 6]]
    assert sum(split_layers(layers, 7), []) == layers
    with pytest.raises(ValueError, match="STAGES=8"):
        split_layers(layers, 8)


@pytest.mark.parametrize(("k", "m", "want"), [(1, 4, 0.0), (2, 4, 0.2), (4, 4, 3 / 7), (4, 16, 3 / 19)])
def test_bubble_fraction(k, m, want):
    assert bubble_fraction(k, m) == pytest.approx(want)


def test_batch_must_split_into_microbatches():
    backend = Pipeline(StrategyOptions(name="pipeline", devices=2, stages=2, microbatches=4))
    with pytest.raises(ValueError, match="MICROBATCHES=4"):
        backend.loss_divisor(30)


def _loss_fn(divisor: float):
    def loss(y, logits):
        per = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        return tf.reduce_sum(per) / divisor

    return loss


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(1)
    model = models.build("shapes_cnn", (16, 16, 3), 4)
    x = tf.random.stateless_uniform([16, 16, 16, 3], seed=[1, 2])
    y = tf.random.stateless_uniform([16], seed=[3, 4], maxval=4, dtype=tf.int64)
    with tf.GradientTape() as tape:
        loss = _loss_fn(16.0)(y, model(x, training=True))
    return model, x, y, float(loss), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


@pytest.mark.parametrize("remat", [False, True])
def test_gradients_match_the_unsplit_model(setup, remat):
    model, x, y, want_loss, want = setup
    backend = Pipeline(StrategyOptions(name="pipeline", devices=2, stages=2, microbatches=4, remat=remat))
    step = tf.function(lambda a, b: backend.loss_and_grads(model, _loss_fn(16.0), (a, b)))
    loss, logits, grads = step(x, y)
    assert logits.shape == (16, 4)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    for g, w in zip(grads, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-6)


def test_each_stage_backward_runs_on_its_device(setup):
    model, x, y, _, _ = setup
    backend = Pipeline(StrategyOptions(name="pipeline", devices=2, stages=2, microbatches=2))
    fn = tf.function(lambda a, b: backend.loss_and_grads(model, _loss_fn(16.0), (a, b)))
    graph = fn.get_concrete_function(x, y).graph
    filters = [op for op in graph.get_operations() if op.type == "Conv2DBackpropFilter"]
    # shapes_cnn's 4 convs split 3 | 1 over the stages; 2 micro-batches each.
    on = {d: sum(1 for op in filters if op.device.upper().endswith(f"CPU:{d}")) for d in (0, 1)}
    assert on == {0: 6, 1: 2}, [op.device for op in filters]


def test_extra_metrics_report_bubble_and_stage_times(setup):
    model, x, y, _, _ = setup
    backend = Pipeline(StrategyOptions(name="pipeline", devices=2, stages=2, microbatches=4))
    tf.function(lambda a, b: backend.loss_and_grads(model, _loss_fn(16.0), (a, b)))(x, y)
    got = backend.extra_metrics()["pipeline"]
    assert got["bubble_fraction"] == pytest.approx(0.2)
    assert len(got["stage_time_ms"]) == 2 and all(t > 0 for t in got["stage_time_ms"])
