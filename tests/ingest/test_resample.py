"""Class balance and weighted mixing, counted by example ids and labels through real pipelines.

The stated bound: a resampled epoch holds exactly each group's apportioned quota (within 1 of
``epoch * target``); any prefix of it holds each group within 4 standard deviations of the
hypergeometric count (drawing that many examples without replacement from the epoch's draws).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from ingest import datasets, pipeline, resample
from ingest.built import Position
from ingest.datasets.mixed import SOURCE
from ingest.datasets.synthetic import Synthetic
from ingest.options import DataOptions, PipelineOptions
from ingest.sources import synthetic
from stoker.errors import DataError

N, BATCH = 2000, 50
SKEW = (0.9, 0.05, 0.03, 0.02)


class Other(Synthetic):
    """A second in-memory source of 400 training examples with the same element spec."""

    name = "other_synthetic"

    def num_examples(self, split: str) -> int | None:
        return 400 if split == "train" else 64


def _build(options: DataOptions, position: Position, *, pipelines: int = 1, index: int = 0, popts=None):
    dataset = datasets.get(options)
    popts = popts or PipelineOptions()
    order, why = pipeline.training_order(dataset, "train", popts, seed=3, shuffle_buffer=256)
    assert order is not None, why
    ctx = tf.distribute.InputContext(pipelines, index, 1) if pipelines > 1 else None
    built = pipeline.build(
        dataset,
        "train",
        popts,
        ctx,
        batch_size=BATCH,
        training=True,
        seed=3,
        shuffle_buffer=256,
        position=position,
        order=order,
    )
    return order, built.dataset


def _take(ds, examples: int, keys=("id", "label")) -> dict[str, np.ndarray]:
    out: dict[str, list] = {k: [] for k in keys}
    for batch in ds.take(-(-examples // (BATCH // 1))):
        for k in keys:
            out[k].append(batch[k].numpy())
    return {k: np.concatenate(v)[:examples] for k, v in out.items()}


def _within_hypergeometric(count: int, draws: int, group: int, total: int) -> bool:
    p = group / total
    sd = math.sqrt(draws * p * (1 - p) * (total - draws) / (total - 1))
    return abs(count - draws * p) <= 4 * sd + 1


def test_apportion_sums_and_takes_largest_remainders():
    assert resample.apportion(10, (1, 1, 1)) == (4, 3, 3)
    assert resample.apportion(2000, (1, 1, 1, 1)) == (500, 500, 500, 500)
    assert sum(resample.apportion(997, (0.9, 0.05, 0.03, 0.02))) == 997


def test_skewed_labels_hold_their_fractions_in_every_run_of_examples():
    labels = synthetic.skewed_labels(np.arange(N), SKEW)
    assert np.bincount(labels).tolist() == [1800, 100, 60, 40]
    for start in range(0, N, 250):  # every shard-sized run, not only the whole split
        counts = np.bincount(labels[start : start + 250], minlength=4)
        assert np.all(np.abs(counts - 250 * np.array(SKEW)) <= 3), counts


def test_uniform_balance_gives_each_class_a_quarter_of_every_epoch():
    opts = DataOptions(name="synthetic", image_size=16, train_examples=N, class_fractions=SKEW, balance="uniform")
    order, ds = _build(opts, Position(seed=3))
    assert order.num_examples == N and order.num_records == N
    got = _take(ds, 2 * N)
    labels = synthetic.skewed_labels(got["id"], SKEW)
    assert np.array_equal(labels, got["label"]), "labels travel with their examples"
    for e in range(2):
        ids, lab = got["id"][e * N : (e + 1) * N], got["label"][e * N : (e + 1) * N]
        assert np.bincount(lab, minlength=4).tolist() == [500] * 4, f"epoch {e}"
        per_id = Counter(ids.tolist())
        # the majority class is subsampled (each at most once), the minority ones repeated evenly
        assert max(per_id[i] for i in set(ids[lab == 0].tolist())) == 1
        assert sorted(set(per_id[i] for i in set(ids[lab == 3].tolist()))) == [12, 13]  # 500 of 40
        prefix = lab[:400]
        for c in range(4):
            assert _within_hypergeometric(int((prefix == c).sum()), 400, 500, N), (c, np.bincount(prefix))
    first, second = got["id"][:N], got["id"][N:]
    majority = set(np.flatnonzero(synthetic.skewed_labels(np.arange(N), SKEW) == 0).tolist())
    assert set(first.tolist()) & majority != set(second.tolist()) & majority, "each epoch draws a new subset"


def test_class_weights_give_their_fractions():
    opts = DataOptions(
        name="synthetic", image_size=16, train_examples=N, class_fractions=SKEW, class_weights=(4, 3, 2, 1)
    )
    _, ds = _build(opts, Position(seed=3))
    got = _take(ds, N)
    assert np.bincount(got["label"], minlength=4).tolist() == [800, 600, 400, 200]


def test_weighted_mix_gives_its_fractions_and_ends_with_the_heaviest_source():
    with datasets.REGISTRY.temporary(Other.name, Other):
        opts = DataOptions(name=f"synthetic+{Other.name}", image_size=16, train_examples=1000, weights=(0.7, 0.3))
        order, ds = _build(opts, Position(seed=3))
        assert order.num_records == 1400 and order.quota.take == (1000, 429)
        m = order.num_examples
        got = _take(ds, m, keys=("id", "label", SOURCE))
    source, ids = got[SOURCE], got["id"]
    assert np.bincount(source).tolist() == [1000, 429]
    assert sorted(ids[source == 0].tolist()) == list(range(1000)), "the heaviest source read once"
    counts = Counter(ids[source == 1].tolist())
    assert len(counts) == 400 and sorted(Counter(counts.values()).items()) == [(1, 371), (2, 29)]
    prefix = source[: m // 4]
    assert _within_hypergeometric(int((prefix == 1).sum()), m // 4, 429, m)


def _global_batches(opts, start_examples: int, pipelines: int, steps: int) -> np.ndarray:
    """``steps`` global batches of (source, id) from a position, the pipelines' parts side by side."""
    parts = []
    for index in range(pipelines):
        order, _ = _build(opts, Position(seed=3))
        position = Position.at(start_examples, order.num_examples, 3)
        _, ds = _build(opts, position, pipelines=pipelines, index=index)
        keys = ("id", SOURCE) if SOURCE in ds.element_spec else ("id",)
        part = [np.stack([b[k].numpy() for k in keys], -1) for b in ds.take(steps)]
        parts.append(np.stack(part))
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("kind", ["balance", "mix"])
def test_a_resume_on_other_worker_counts_gives_the_same_stream(kind):
    with datasets.REGISTRY.temporary(Other.name, Other):
        if kind == "balance":
            opts = DataOptions(
                name="synthetic", image_size=16, train_examples=N, class_fractions=SKEW, balance="uniform"
            )
        else:
            opts = DataOptions(name=f"synthetic+{Other.name}", image_size=16, train_examples=1000, weights=(0.7, 0.3))
        order, _ = _build(opts, Position(seed=3))
        steps = order.num_examples // BATCH + 6  # across the epoch boundary
        whole = _global_batches(opts, 0, 1, steps)
        at = 17  # resume at step 17, on 2 input pipelines of half a batch each
        resumed = _global_batches(opts, at * BATCH, 2, steps - at)
    assert np.array_equal(whole[at:], resumed)


def test_bad_resampling_settings_name_what_to_change():
    one_class = DataOptions(name="synthetic", image_size=16, train_examples=200, class_fractions=(1, 0, 0, 0))
    import dataclasses

    with pytest.raises(DataError, match=r"class 1, 2, 3 has no training example"):
        _build(dataclasses.replace(one_class, balance="uniform"), Position())
    with pytest.raises(DataError, match=r"class_weights has 3 values but the dataset has 4 classes"):
        _build(dataclasses.replace(one_class, class_weights=(1, 1, 1)), Position())
    balanced = dataclasses.replace(one_class, class_fractions=SKEW, balance="uniform")
    with pytest.raises(DataError, match=r"data.balance=uniform resamples by input position.*iterator_checkpoint"):
        _build(balanced, Position(), popts=PipelineOptions(iterator_checkpoint=True))
    with pytest.raises(DataError, match=r"needs pipeline.shuffle=true or global"):
        _build(balanced, Position(), popts=PipelineOptions(shuffle=False))
    with pytest.raises(ValueError, match=r"data.weights is for mixed datasets"):
        DataOptions(name="synthetic", weights=(1, 2))


def test_a_mix_of_unlike_datasets_names_the_differing_feature():
    class Small(Synthetic):
        name = "small_synthetic"

        @property
        def element_spec(self):
            return dict(super().element_spec, image=tf.TensorSpec([4, 4, 3], tf.float32))

    with datasets.REGISTRY.temporary(Small.name, Small), pytest.raises(DataError) as err:
        datasets.get(DataOptions(name=f"synthetic+{Small.name}", image_size=16))
    assert "feature 'image' is uint8 [16, 16, 3] in synthetic but float32 [4, 4, 3] in small_synthetic" in str(
        err.value
    )


def test_balanced_loss_weights_weigh_each_class_equally_in_total():
    labels = synthetic.skewed_labels(np.arange(N), SKEW)
    weights = np.array(resample.class_weights(labels, 4))
    totals = weights * np.bincount(labels, minlength=4)
    assert np.allclose(totals, N / 4) and np.isclose(weights[0], N / (4 * 1800))
