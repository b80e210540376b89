"""The input position: an order that is a function of (seed, epoch), read the same way by every
reader and every topology, and resumed from three numbers. Counted by example ids, in process."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from ingest import datasets, pipeline
from ingest.built import Position
from ingest.options import DataOptions, PipelineOptions
from ingest.order import Order, Slots
from stoker.errors import DataError, StokerError

SEED, BATCH = 3, 24


@pytest.fixture(scope="module")
def shapes(shapes_dir):
    return datasets.get(DataOptions(name="shapes", data_dir=shapes_dir, image_size=32))


def global_batches(ds, options, pipelines, position, steps, *, buffer=100, seed=SEED, batch=BATCH):
    """The ids of ``steps`` global batches: each pipeline's part, concatenated in pipeline order."""
    parts, engines = [], set()
    for i in range(pipelines):
        ctx = tf.distribute.InputContext(pipelines, i, pipelines)
        built = pipeline.build(
            ds,
            "train",
            options,
            ctx,
            batch_size=batch,
            training=True,
            seed=seed,
            shuffle_buffer=buffer,
            position=position,
        )
        engines.add(built.engine)
        it = iter(built.dataset)
        parts.append([next(it)["id"].numpy() for _ in range(steps)])
    return [np.concatenate([p[s] for p in parts]) for s in range(steps)], engines


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("mode", ["none", "window", "global"])
def test_each_epoch_is_a_permutation_and_epochs_differ(mode):
    order = Order((7, 30, 1, 12), seed=5, mode=mode, window=8 if mode == "window" else 0)
    e0, e1 = order.epoch_indices(0), order.epoch_indices(1)
    assert sorted(e0.tolist()) == list(range(50)) and sorted(e1.tolist()) == list(range(50))
    assert np.array_equal(e0, order.epoch_indices(0)), "the order must be a function of (seed, epoch)"
    if mode == "none":
        assert e0.tolist() == list(range(50))
    else:
        assert not np.array_equal(e0, e1)
        assert not np.array_equal(e0, Order((7, 30, 1, 12), seed=6, mode=mode, window=order.window).epoch_indices(0))


def test_a_window_holds_records_of_consecutive_files_in_the_epochs_file_order():
    order = Order((10, 10, 10, 10), seed=1, mode="window", window=10)
    perm = order.file_permutation(tf.constant(0, tf.int64)).numpy()
    idx = order.epoch_indices(0)
    for w in range(4):  # windows line up with files here: window w is file perm[w], permuted
        assert sorted(idx[w * 10 : (w + 1) * 10].tolist()) == list(range(perm[w] * 10, perm[w] * 10 + 10))


def test_slots_split_every_global_batch_and_count_positions():
    s = [Slots(global_batch=6, pipelines=3, index=i, start=4) for i in range(3)]
    got = sorted(int(x) for sl in s for x in sl.position(tf.range(10, dtype=tf.int64)).numpy())
    assert got == list(range(4, 34))
    assert s[1].position(tf.constant([0, 1, 2], tf.int64)).numpy().tolist() == [6, 7, 12]
    assert [sl.count_below(8) for sl in s] == [4, 2, 2]


@pytest.mark.parametrize("cache", [True, False], ids=["decoded", "stream"])
def test_same_global_batches_on_1_2_and_3_pipelines(shapes, cache):
    options = PipelineOptions(cache=cache)
    one, e1 = global_batches(shapes, options, 1, Position(seed=SEED), 24)
    assert e1 == {"tfdata/decoded" if cache else "tfdata/stream"}
    for p in (2, 3):
        assert same(one, global_batches(shapes, options, p, Position(seed=SEED), 24)[0]), f"{p} pipelines differ"
    ids = np.concatenate(one)
    for epoch in range(2):  # 256 examples per epoch: each once, whatever the batches that span epochs
        assert sorted(ids[epoch * 256 : (epoch + 1) * 256].tolist()) == list(range(256))


def test_every_reader_gives_the_same_order(shapes):
    decoded, _ = global_batches(shapes, PipelineOptions(), 1, Position(seed=SEED), 22)
    stream, _ = global_batches(shapes, PipelineOptions(cache=False), 2, Position(seed=SEED), 22)
    assert same(decoded, stream)
    g_decoded, _ = global_batches(shapes, PipelineOptions(shuffle="global"), 1, Position(seed=SEED), 22)
    g_encoded, engines = global_batches(
        shapes, PipelineOptions(shuffle="global", cache=False), 3, Position(seed=SEED), 22
    )
    assert engines == {"tfdata/encoded"} and same(g_decoded, g_encoded)
    assert not same(decoded, g_decoded)


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2), (2, 3)])
@pytest.mark.parametrize("cache", [True, False], ids=["decoded", "stream"])
def test_resume_from_a_position_on_another_topology_continues_the_same_sequence(shapes, before, after, cache):
    options = PipelineOptions(cache=cache)
    whole, _ = global_batches(shapes, options, before, Position(seed=SEED), 30)
    step = 13  # 312 examples: epoch 1, 56 consumed
    resumed, _ = global_batches(shapes, options, after, Position.at(step * BATCH, 256, SEED), 30 - step)
    assert same(whole[step:], resumed)


def test_synthetic_in_memory_data_is_addressed_too():
    ds = datasets.get(DataOptions(name="synthetic", image_size=16, train_examples=100))
    for options in (PipelineOptions(), PipelineOptions(cache=False, shuffle="global")):
        one, engines = global_batches(ds, options, 1, Position(seed=1), 8, batch=12)
        three, _ = global_batches(ds, options, 3, Position(seed=1), 8, batch=12)
        assert engines <= {"tfdata/decoded", "tfdata/encoded"} and same(one, three)
        assert len(set(np.concatenate(one).tolist())) == 96  # 96 of the epoch's 100, none twice


def test_augmentation_is_keyed_by_position_not_by_pipeline(shapes):
    """Same seed, same global batch, same flips: the images agree on every topology."""
    images = {}
    for p in (1, 2):
        parts = []
        for i in range(p):
            built = pipeline.build(
                shapes,
                "train",
                PipelineOptions(),
                tf.distribute.InputContext(p, i, p),
                batch_size=8,
                training=True,
                seed=SEED,
                shuffle_buffer=64,
                position=Position(seed=SEED),
            )
            parts.append(next(iter(built.dataset))["image"].numpy())
        images[p] = np.concatenate(parts)
    assert shapes.has_augment and np.array_equal(images[1], images[2])


def test_a_position_outside_the_epoch_or_without_a_training_pipeline_is_refused(shapes):
    with pytest.raises(DataError, match="outside an epoch of 256"):
        pipeline.build(shapes, "train", PipelineOptions(), None, batch_size=8, training=True, position=Position(0, 256))
    with pytest.raises(DataError, match="iterator_checkpoint"):
        pipeline.build(
            shapes,
            "train",
            PipelineOptions(iterator_checkpoint=True),
            None,
            batch_size=8,
            training=True,
            position=Position(),
        )
    order, why = pipeline.training_order(shapes, "train", PipelineOptions(skip_corrupt=True), seed=0, shuffle_buffer=8)
    assert order is None and "skip_corrupt" in why


def test_a_checkpoint_of_other_data_or_another_order_is_named(tmp_path):
    from training.checkpoints import InputState

    saved = InputState(Order((100, 100), seed=1, mode="window", window=50), "shapes")
    saved.set(250)
    path = tf.train.Checkpoint(**saved.trackables()).save(str(tmp_path / "ckpt"))
    assert InputState(saved.order, "shapes").nbytes() < 1024
    same_state = InputState(saved.order, "shapes")
    tf.train.Checkpoint(**same_state.trackables()).restore(path)
    assert same_state.restored() == Position(1, 50, 1)
    other = InputState(dataclasses.replace(saved.order, seed=2, counts=(100, 90)), "shapes")
    tf.train.Checkpoint(**other.trackables()).restore(path)
    with pytest.raises(
        StokerError, match=r"num_examples: checkpoint 200, this run 190.*seed: checkpoint 1, this run 2"
    ):
        other.restored()
    # A run through the tf.data service keeps a ledger too: it refuses a checkpoint without one
    # before restoring (TensorFlow would only say an object went unmatched), and the other way round.
    service = InputState(saved.order, "shapes", ledger=True)
    with pytest.raises(StokerError, match=r"input: checkpoint None, this run 'tf.data service ledger'"):
        service.check_saved(path)
    service.set(250, b"ledger")
    with_ledger = tf.train.Checkpoint(**service.trackables()).save(str(tmp_path / "svc"))
    with pytest.raises(StokerError, match=r"input: checkpoint 'tf.data service ledger', this run None"):
        InputState(saved.order, "shapes").check_saved(with_ledger)
    InputState(saved.order, "shapes", ledger=True).check_saved(with_ledger)


def test_every_window_mixes_shards_written_by_class(shapes):
    """``shapes`` writes id i into shard i % 4 and gives it label i % 4: each shard is one class.
    Reading every shard round-robin (pipeline.order_cycle) puts all four into every window."""
    batches, _ = global_batches(shapes, PipelineOptions(cache=False), 1, Position(seed=SEED), 4, buffer=96)
    for window in np.concatenate(batches).reshape(-1, 96):
        counts = np.bincount(window % 4, minlength=4)
        assert counts.min() >= 16, f"a window of 96 holds classes {counts.tolist()}: shards are not mixed"
