"""Elastic resume: SIGKILL the whole run at random steps, resume on another topology, count ids.

Each chain trains 2 epochs of ``synthetic`` (480 examples, global batch 24: 20 steps an epoch).
Every leg but the last is SIGKILLed as a process group at a random step; the next leg resumes
with another strategy or worker count. The global batch of every step (the workers' parts in
worker order) must equal the one an uninterrupted single-pipeline build gives, so each epoch
sees each example exactly once and the run ends at the same step as an uninterrupted one.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter

import numpy as np
import psutil
import pytest
import tensorflow as tf

from ingest import datasets, pipeline
from ingest.built import Position
from ingest.options import DataOptions, PipelineOptions
from tests.training import runs

pytestmark = pytest.mark.slow

EXAMPLES, BATCH, EPOCHS, EVERY = 480, 24, 2, 3
TOTAL = EPOCHS * EXAMPLES // BATCH
ITEMS = ["CONFIG=tiny", "DATASET=synthetic", f"BATCH={BATCH}", f"EPOCHS={EPOCHS}"]
SETS = [
    f"data.image_size=16 data.train_examples={EXAMPLES} data.eval_examples=32 data.shuffle_buffer=100 "
    f"train.checkpoint_every={EVERY} train.eval_every_epoch=false train.record_ids=true "
    "strategy.collective_timeout_s=60"
]
CHAINS = {
    "multi_worker": [
        ["STRATEGY=mirrored", "DEVICES=2"],
        ["STRATEGY=multi_worker", "NP=2", "DEVICES=1"],
        ["STRATEGY=multi_worker", "NP=1", "DEVICES=1"],
        ["STRATEGY=multi_worker", "NP=2", "DEVICES=1"],
        ["STRATEGY=multi_worker", "NP=3", "DEVICES=1"],
    ],
    "horovod": [["STRATEGY=horovod", f"NP={n}"] for n in (2, 1, 2, 3)],
    "pipeline": [["STRATEGY=pipeline", "DEVICES=2", "STAGES=2", "MICROBATCHES=4"], ["STRATEGY=one_device"]],
}


def expected_batches(total: int = TOTAL) -> list[np.ndarray]:
    """The ids of every global batch of an uninterrupted run (``total`` steps), built as one input pipeline."""
    ds = datasets.get(DataOptions(name="synthetic", image_size=16, train_examples=EXAMPLES))
    built = pipeline.build(
        ds,
        "train",
        PipelineOptions(),
        None,
        batch_size=BATCH,
        training=True,
        seed=0,
        shuffle_buffer=100,
        position=Position(),
    )
    it = iter(built.dataset)
    return [next(it)["id"].numpy() for _ in range(total)]


def chief_step(run_dir) -> int:
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def leg_batches(ids_dir, workers: int) -> dict[int, np.ndarray]:
    """step -> global batch ids, for the steps every worker of a leg recorded."""
    per_worker = []
    for w in range(workers):
        path = ids_dir / f"worker_{w}.txt"
        text = path.read_text() if path.exists() else ""
        complete = text[: text.rfind("\n") + 1]  # a line torn by the kill is not a step
        per_worker.append({s: np.array(i) for s, i in (_line(x) for x in complete.splitlines())})
    steps = set.intersection(*(set(d) for d in per_worker))
    return {s: np.concatenate([d[s] for d in per_worker]) for s in steps}


def _line(text: str) -> tuple[int, list[int]]:
    step, *ids = map(int, text.split())
    return step, ids


def _workers(items: list[str]) -> int:
    np_ = next((i.split("=")[1] for i in items if i.startswith("NP=")), "1")
    return 1 if "STRATEGY=mirrored" in items else int(np_)


def run_leg_and_kill(runs_dir, items, resumed: int, rng: random.Random) -> None:
    """Start a leg and SIGKILL its whole process group once the chief is a few steps past ``resumed``."""
    # Past at least one new checkpoint, at a random step; early enough that the legs after it still
    # have steps to train (with kills at 7-12 steps, the 5th leg of a chain was left none of 40).
    lines = EVERY + 1 + rng.randrange(EVERY * 2)
    runs.start_and_kill(runs_dir, "elastic", ITEMS + items, SETS, lines=lines, poll_s=0.02)


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("chain", list(CHAINS))
def test_kill_and_resume_on_other_topologies_gives_the_uninterrupted_batches(tmp_path, chain):
    rng = random.Random(f"elastic-{chain}")
    expected = expected_batches()
    run_dir = tmp_path / "elastic"
    legs = CHAINS[chain]
    got: dict[int, np.ndarray] = {}
    resumed = 0
    for n, items in enumerate(legs):
        last = n == len(legs) - 1
        if last:
            metrics = runs.train(tmp_path, "elastic", ITEMS + items, SETS, timeout=400)
            assert metrics["resumed_from_step"] == resumed and metrics["steps"] == TOTAL
            assert metrics["input_state"] == "position" and metrics["input_state_bytes"] < 65536
        else:
            run_leg_and_kill(tmp_path, items, resumed, rng)
            wait_gone(tmp_path)  # a worker may still save at SIGTERM from its launcher's death
        nxt = TOTAL if last else chief_step(run_dir)
        assert nxt > resumed, f"leg {n} {items} trained no step past {resumed}: its transition went untested"
        batches = leg_batches(run_dir / "ids", _workers(items))
        for s in range(resumed + 1, nxt + 1):
            assert s in batches, f"leg {n} {items}: step {s} recorded by no worker or not by all"
            got[s] = batches[s]
        shutil.move(run_dir / "ids", tmp_path / f"ids_leg{n}")
        resumed = nxt
    assert sorted(got) == list(range(1, TOTAL + 1))
    wrong = [s for s in got if not np.array_equal(got[s], expected[s - 1])]
    assert not wrong, f"steps whose global batch differs from the uninterrupted run's: {wrong[:10]}"
    ids = np.concatenate([got[s] for s in sorted(got)])
    per_epoch = EXAMPLES // BATCH * BATCH
    for e in range(EPOCHS):
        counts = Counter(ids[e * per_epoch : (e + 1) * per_epoch].tolist())
        assert len(counts) == per_epoch and max(counts.values()) == 1, f"epoch {e}: an example missing or twice"
    wait_gone(tmp_path)


def wait_gone(runs_dir, seconds: float = 10) -> None:
    """Every process of the run has ended within ``seconds`` (workers get SIGTERM when the launcher dies)."""
    marker = f"train.runs_dir={runs_dir}"
    deadline = time.monotonic() + seconds
    while left := [p.pid for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]:
        assert time.monotonic() < deadline, f"processes of the killed run still run {seconds:.0f} s later: {left}"
        time.sleep(0.2)
