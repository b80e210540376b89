"""SIGKILL a balanced and a mixed run mid-epoch, resume on another topology: the same stream.

Each run trains 2 epochs: ``synthetic`` skewed 90/5/3/2 and resampled to uniform (480 examples
an epoch), or ``synthetic+shapes`` mixed 0.7/0.3 (480 + 206 an epoch). The first leg (mirrored
over 2 devices) is SIGKILLed as a process group at a random step after a checkpoint; the second
(one device) resumes. Every step's global batch must equal an uninterrupted build's.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from ingest import datasets, pipeline
from ingest.built import Position
from ingest.options import DataOptions, PipelineOptions
from ingest.sources import synthetic
from tests.training import runs
from tests.training.test_elastic import chief_step, leg_batches, wait_gone

pytestmark = pytest.mark.slow

EXAMPLES, BATCH, EPOCHS, EVERY = 480, 24, 2, 3
SKEW = (0.9, 0.05, 0.03, 0.02)
KINDS = {
    "balance": ("synthetic", f"data.class_fractions={','.join(map(str, SKEW))} data.balance=uniform"),
    "mix": ("synthetic+shapes", "data.weights=0.7,0.3"),
}


def _options(kind: str, data_dir) -> DataOptions:
    name = KINDS[kind][0]
    extra = dict(class_fractions=SKEW, balance="uniform") if kind == "balance" else dict(weights=(0.7, 0.3))
    return DataOptions(name=name, data_dir=str(data_dir), image_size=16, train_examples=EXAMPLES, **extra)


def _expected(kind: str, data_dir) -> tuple[int, list[np.ndarray]]:
    """(steps per epoch, every global batch's ids) of an uninterrupted single-pipeline build."""
    dataset = datasets.get(_options(kind, data_dir))
    order, why = pipeline.training_order(dataset, "train", PipelineOptions(), seed=0, shuffle_buffer=100)
    assert order is not None, why
    built = pipeline.build(
        dataset,
        "train",
        PipelineOptions(),
        batch_size=BATCH,
        training=True,
        seed=0,
        shuffle_buffer=100,
        position=Position(),
        order=order,
    )
    per_epoch = order.num_examples // BATCH
    it = iter(built.dataset)
    return per_epoch, [next(it)["id"].numpy() for _ in range(EPOCHS * per_epoch)]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", list(KINDS))
def test_sigkill_then_resume_reproduces_the_resampled_stream(tmp_path, kind):
    name, sets = KINDS[kind]
    items = ["CONFIG=tiny", f"DATASET={name}", f"BATCH={BATCH}", f"EPOCHS={EPOCHS}", f"DATA_DIR={tmp_path / 'data'}"]
    sets = [
        f"data.image_size=16 data.train_examples={EXAMPLES} data.eval_examples=32 data.shuffle_buffer=100 {sets} "
        f"train.checkpoint_every={EVERY} train.eval_every_epoch=false train.record_ids=true"
    ]
    first = items + ["STRATEGY=mirrored", "DEVICES=2"]
    lines = 2 * EVERY + 1 + random.Random(kind).randrange(2 * EVERY)
    runs.start_and_kill(tmp_path, "r", first, sets, lines=lines)
    wait_gone(tmp_path)
    saved = chief_step(tmp_path / "r")
    before = leg_batches(tmp_path / "r" / "ids", 1)
    (tmp_path / "r" / "ids" / "worker_0.txt").unlink()

    per_epoch, expected = _expected(kind, tmp_path / "data")
    total = EPOCHS * per_epoch
    metrics = runs.train(tmp_path, "r", items + ["STRATEGY=one_device"], sets, timeout=400)
    assert metrics["resumed_from_step"] == saved and metrics["steps"] == total and 0 < saved < total
    after = leg_batches(tmp_path / "r" / "ids", 1)
    got = {s: before[s] for s in range(1, saved + 1)} | after
    assert sorted(got) == list(range(1, total + 1))
    wrong = [s for s in got if not np.array_equal(got[s], expected[s - 1])]
    assert not wrong, f"steps whose batch differs from the uninterrupted run's: {wrong[:10]}"
    if kind == "balance":  # each class a quarter of each epoch's batches (the remainder aside)
        for e in range(EPOCHS):
            ids = np.concatenate([got[s] for s in range(e * per_epoch + 1, (e + 1) * per_epoch + 1)])
            counts = np.bincount(synthetic.skewed_labels(ids, SKEW), minlength=4)
            assert np.all(np.abs(counts - EXAMPLES / 4) <= 1), f"epoch {e}: {counts}"
