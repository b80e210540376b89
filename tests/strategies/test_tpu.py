"""TPU: the input readiness check runs on any machine; STRATEGY=tpu without a TPU fails fast."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import tensorflow as tf

from ingest import datasets, pipeline
from ingest.options import DataOptions, PipelineOptions
from strategies.tf_distribute import tpu_readiness
from tests.training import runs


def test_static_batches_are_ready():
    ds = tf.data.Dataset.range(10).map(lambda i: {"x": tf.fill([3], i)}).batch(4, drop_remainder=True)
    assert tpu_readiness(ds) == []


def test_partial_last_batch_is_named():
    ds = tf.data.Dataset.range(10).map(lambda i: {"x": tf.fill([3], i)}).batch(4)
    (problem,) = tpu_readiness(ds)
    assert "x" in problem and "drop_remainder=True" in problem


@pytest.mark.parametrize(
    "make",
    [
        lambda: tf.data.Dataset.range(8).map(lambda i: tf.py_function(lambda v: v, [i], tf.int64)),
        lambda: tf.data.Dataset.range(8).map(lambda i: tf.numpy_function(np.square, [i], tf.int64)),
        lambda: tf.data.Dataset.from_generator(lambda: iter(range(8)), output_signature=tf.TensorSpec([], tf.int64)),
    ],
    ids=["py_function", "numpy_function", "from_generator"],
)
def test_python_stages_are_named(make):
    ds = make().map(lambda v: tf.reshape(v, [])).batch(4, drop_remainder=True)
    problems = tpu_readiness(ds)
    assert any("calls Python" in p for p in problems), problems


def test_stoker_training_pipeline_is_ready_and_eval_pipeline_is_not():
    data = datasets.get(DataOptions(name="synthetic", image_size=16, train_examples=64, eval_examples=30))
    train = pipeline.build(data, "train", PipelineOptions(), None, batch_size=8, training=True, shuffle_buffer=64)
    assert tpu_readiness(train.dataset) == []
    evaluation = pipeline.build(data, "validation", PipelineOptions(), None, batch_size=8, training=False, repeat=False)
    assert any("drop_remainder" in p for p in tpu_readiness(evaluation.dataset))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_strategy_tpu_without_tpu_fails_fast_with_the_message(tmp_path):
    cmd = runs.command(tmp_path, "tpu", ["CONFIG=tiny", "DATASET=synthetic", "STRATEGY=tpu"], [])
    proc = subprocess.run(cmd, env=runs.env(), cwd=runs.REPO, capture_output=True, text=True, timeout=90)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "no TPU found for TPU='local'" in out and "STRATEGY=mirrored" in out
    assert "Traceback" not in out
