"""Batch-wise training streams: a dataset with nothing to augment whose preprocess works on batches
gets whole batches gathered and preprocessed once, and they equal the per-example path's batches
(every key, every value) on any topology and from any position."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ingest import datasets, pipeline
from ingest.built import Position
from ingest.datasets.clicks import Clicks
from ingest.datasets.shapes import Shapes
from ingest.datasets.synthetic import Synthetic
from ingest.options import DataOptions, PipelineOptions


class PerExampleSynthetic(Synthetic):
    batch_preprocess = False  # the same preprocess, declared per-example: the per-example path


class PerExampleClicks(Clicks):
    def preprocess(self, example):  # a preprocess of its own (the identity): the per-example path
        return example


def batches(ds, options, pipelines, index, position, steps):
    ctx = tf.distribute.InputContext(pipelines, index, pipelines)
    built = pipeline.build(
        ds, "train", options, ctx, batch_size=48, training=True, seed=3, shuffle_buffer=100, position=position
    )
    it = iter(built.dataset)
    return built, [{k: v.numpy() for k, v in next(it).items()} for _ in range(steps)]


def equal(a, b) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


@pytest.mark.parametrize("name", ["synthetic", "clicks"])
@pytest.mark.parametrize(
    "options", [PipelineOptions(), PipelineOptions(cache_form="encoded"), PipelineOptions(shuffle="global")]
)
def test_batch_wise_batches_equal_the_per_example_path(name, options, clicks_dir):
    if name == "synthetic":
        opts = DataOptions(name=name, image_size=16, train_examples=1000)
        fast, slow = datasets.get(opts), PerExampleSynthetic(opts)
    else:
        opts = DataOptions(name=name, data_dir=clicks_dir)
        fast, slow = datasets.get(opts), PerExampleClicks(opts)
    # 1000 examples, batches of 48: 25 batches cross epoch boundaries that fall inside a block
    for pipelines, position in [(1, Position(1, 480, 3)), (3, Position(2, 96, 3))]:
        for index in range(pipelines):
            built, got = batches(fast, options, pipelines, index, position, 25)
            slow_built, want = batches(slow, options, pipelines, index, position, 25)
            assert built.batch_wise and not slow_built.batch_wise
            assert equal(got, want), (name, options.cache_form, options.shuffle, pipelines, index, position)
    assert got[0]["image" if name == "synthetic" else "features"].dtype == np.float32


class PerExampleShapes(Shapes):
    batch_preprocess = False


def test_an_augmented_dataset_is_preprocessed_per_batch_after_its_augment(shapes_dir):
    opts = DataOptions(name="shapes", data_dir=shapes_dir, image_size=32)
    shapes = datasets.get(opts)
    assert shapes.preprocesses_batches() and not shapes.batch_wise()
    built, got = batches(shapes, PipelineOptions(), 2, 1, Position(1, 72, 3), 8)
    _, want = batches(PerExampleShapes(opts), PipelineOptions(), 2, 1, Position(1, 72, 3), 8)
    assert not built.batch_wise and equal(got, want)


def test_naive_keeps_the_per_example_step():
    # pipeline.vectorize=false (naive) is the baseline the optimization is measured against
    ds = datasets.get(DataOptions(name="synthetic", image_size=16, train_examples=1000))
    built, got = batches(ds, PipelineOptions(preset="naive", cache=True), 1, 0, Position(seed=3), 3)
    fast, want = batches(ds, PipelineOptions(preset="naive", cache=True, vectorize=True), 1, 0, Position(seed=3), 3)
    assert not built.batch_wise and fast.batch_wise and equal(got, want)
