"""The pipeline builder: presets are the same code; sharding gives every example to one pipeline."""

import dataclasses

import pytest
import tensorflow as tf

from ingest import pipeline, stages
from ingest.options import PRESETS, DataOptions, PipelineOptions
from ingest.testing import Indexed, duplicates_and_missing, ids_of, write_indexed

N_FILES, PER_FILE = 6, 20
N = N_FILES * PER_FILE


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("indexed")
    write_indexed(root / "indexed", "train", files=N_FILES, per_file=PER_FILE)
    write_indexed(root / "indexed", "few", files=2, per_file=PER_FILE)
    return Indexed(DataOptions(name="indexed", data_dir=str(root)))


def one_pass(ds, options, split="train", ctx=None, batch=10, training=False):
    built = pipeline.build(
        ds, split, options, ctx, batch_size=batch, training=training, repeat=False, seed=3, shuffle_buffer=50
    )
    return ids_of(built.dataset), built


def test_presets_differ_only_in_switch_values():
    naive, optimized = PipelineOptions(preset="naive"), PipelineOptions(preset="optimized")
    for key in PRESETS["naive"]:
        assert getattr(naive, key) == PRESETS["naive"][key]
        assert getattr(optimized, key) == PRESETS["optimized"][key]
    assert PipelineOptions(preset="naive", cache=True).cache is True  # a switch beats its preset


@pytest.mark.parametrize("training", [False, True])
def test_naive_and_optimized_yield_the_same_multiset(indexed, training):
    a, _ = one_pass(indexed, PipelineOptions(preset="naive"), training=training)
    b, _ = one_pass(indexed, PipelineOptions(preset="optimized"), training=training)
    assert sorted(a) == sorted(b) == list(range(N))


def test_same_order_when_deterministic(indexed):
    naive = PipelineOptions(preset="naive")
    optimized = PipelineOptions(preset="optimized", deterministic=True)
    for training in (False, True):
        a, _ = one_pass(indexed, naive, training=training)
        b, _ = one_pass(indexed, optimized, training=training)
        assert a == b, f"order differs (training={training})"
    # interleave reads cycle_length files at once: not file order, but reproducible
    again, _ = one_pass(indexed, optimized, training=True)
    assert again == b


@pytest.mark.parametrize("pipelines", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("split,files", [("train", N_FILES), ("few", 2)])
@pytest.mark.parametrize("preset", ["naive", "optimized"])
def test_sharding_gives_every_example_to_exactly_one_pipeline(indexed, pipelines, split, files, preset):
    options = PipelineOptions(preset=preset)
    seen, plans = [], set()
    for index in range(pipelines):
        ctx = tf.distribute.InputContext(pipelines, index, pipelines)
        ids, built = one_pass(indexed, options, split, ctx, batch=pipelines * 2, training=True)
        seen += ids
        plans.add(built.shard_by)
    # drop_remainder in training may drop up to one partial batch per pipeline; check the rest exactly
    dups, missing = duplicates_and_missing(seen, range(files * PER_FILE))
    assert not dups, f"ids read by two pipelines: {dups[:10]}"
    assert len(missing) < pipelines * 2, f"ids no pipeline read: {missing[:10]}"
    expected = "none" if pipelines == 1 else stages.shard_plan(files, pipelines)
    assert plans == {expected}


def test_eval_sharding_is_exact(indexed):
    seen = []
    for index in range(4):
        ids, _ = one_pass(indexed, PipelineOptions(), "few", tf.distribute.InputContext(4, index, 4), batch=4)
        seen += ids
    assert sorted(seen) == list(range(2 * PER_FILE))


def test_shard_plan():
    assert stages.shard_plan(8, 2) == "files" and stages.shard_plan(2, 2) == "files"
    assert stages.shard_plan(1, 2) == "examples"


def test_fewer_files_than_pipelines_warns(indexed, caplog):
    ctx = tf.distribute.InputContext(3, 0, 3)
    one_pass(indexed, PipelineOptions(), "few", ctx, batch=3)
    assert "sharding by example" in caplog.text and "SHARDS=" in caplog.text


def test_every_stage_switch_still_gives_every_example(indexed):
    base = PipelineOptions(preset="naive")
    for key, value in PRESETS["optimized"].items():
        options = dataclasses.replace(base, **{key: value})
        ids, _ = one_pass(indexed, options)
        assert sorted(ids) == list(range(N)), f"switch {key}={value} lost or duplicated examples"


@pytest.mark.parametrize("where", ["memory", "file"])
def test_cache_serves_the_second_epoch(tmp_path, where):
    # The shards are deleted once the first epoch has been read: only a cache that really
    # serves the second epoch can give it (without one, the reader fails on the missing files).
    write_indexed(tmp_path / "indexed", "train", files=N_FILES, per_file=PER_FILE)
    ds = Indexed(DataOptions(name="indexed", data_dir=str(tmp_path)))
    path = str(tmp_path / "cache" / "train") if where == "file" else ""
    (tmp_path / "cache").mkdir()
    built = pipeline.build(
        ds, "train", PipelineOptions(cache=True, cache_path=path), batch_size=N, training=False, repeat=False
    )
    # Each epoch is its own iterator (the cache is shared by the dataset's iterations), so no
    # read-ahead of the first can have fetched the second before the files go.
    first = sorted(i for batch in built.dataset for i in batch["id"].numpy())
    for shard in (tmp_path / "indexed").glob("*.tfrecord"):
        shard.unlink()
    second = sorted(i for batch in built.dataset for i in batch["id"].numpy())
    assert first == second == list(range(N)) and built.cached
    if where == "file":
        assert list((tmp_path / "cache").iterdir()), "cache_path set but no cache file written"
