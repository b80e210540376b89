"""``train.steps_per_loop``: several steps per compiled call run the same steps as one per call.

With op determinism, a run with loops of 5 steps gives the same batches (recorded example ids,
exactly), checkpoints at the same steps, and the same per-step losses and final weights as one step
per call, on every backend: bit for bit on one device; within float32 rounding (relative 1e-6) where
replicas' sums are reduced inside the loop, which TensorFlow may order differently. A run killed
mid-loop-sequence resumes exactly, with another loop size.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from tests.training import runs
from tests.training.test_resume import kill_after_checkpoints

EXAMPLES, BATCH = 480, 24
ITEMS = ["CONFIG=tiny", "DATASET=synthetic", f"BATCH={BATCH}", "EPOCHS=2", "DETERMINISTIC=1"]
SETS = [
    f"data.image_size=16 data.train_examples={EXAMPLES} data.eval_examples=48 data.shuffle_buffer=100 "
    "train.checkpoint_every=7 train.log_every=3 train.keep_checkpoints=50 train.record_ids=true"
]
BACKENDS = {
    "one_device": ["STRATEGY=one_device"],
    "mirrored": ["STRATEGY=mirrored", "DEVICES=2"],
    "pipeline": ["STRATEGY=pipeline", "DEVICES=2", "STAGES=2", "MICROBATCHES=4"],
}
SLOW_BACKENDS = {
    "multi_worker": ["STRATEGY=multi_worker", "NP=2", "DEVICES=1"],
    "horovod": ["STRATEGY=horovod", "NP=2"],
}


def _checkpoint_steps(run_dir) -> list[int]:
    state = tf.train.get_checkpoint_state(str(run_dir / "checkpoints"))
    return sorted(int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """backend -> (runs dir, metrics): the runs "one" (one step per call) and "loop" (5), trained at
    the same time, once per module (the killed-run test reads one_device's "one" as its reference)."""
    done: dict[str, tuple] = {}

    def get(backend: str):
        if backend not in done:
            root = tmp_path_factory.mktemp(f"loops-{backend}")
            items = ITEMS + {**BACKENDS, **SLOW_BACKENDS}[backend]
            metrics = runs.train_all(
                root, {"one": items, "loop": items}, SETS, timeout=600, extra_sets={"loop": ["train.steps_per_loop=5"]}
            )
            done[backend] = root, metrics
        return done[backend]

    return get


def _compare(trained, backend: str) -> None:
    root, metrics = trained(backend)
    one, loop = metrics["one"], metrics["loop"]
    total = 2 * EXAMPLES // BATCH
    assert one["steps"] == loop["steps"] == total and loop["steps_per_loop"] == 5
    np.testing.assert_allclose(one["loss_per_step"], loop["loss_per_step"], rtol=1e-6, atol=0)
    if backend == "one_device":
        assert one["loss_per_step"] == loop["loss_per_step"]
    ids_one = runs.id_lines(root / "one" / "ids" / "worker_0.txt")
    ids_loop = runs.id_lines(root / "loop" / "ids" / "worker_0.txt")
    assert ids_one == ids_loop and [s for s, _ in ids_loop] == list(range(1, total + 1))
    assert _checkpoint_steps(root / "one") == _checkpoint_steps(root / "loop")
    assert 7 in _checkpoint_steps(root / "loop"), "a checkpoint step inside a loop of 5 is kept"
    w1, w2 = runs.model_weights(root / "one"), runs.model_weights(root / "loop")
    assert set(w1) == set(w2)
    for k in w1:
        np.testing.assert_allclose(w1[k], w2[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # Op determinism forbids the in-graph clock that times a looped step's wait: not timed (null).
    assert loop["input_wait_per_step"][0] is not None and loop["input_wait_per_step"][-1] is None
    assert one["eval"]["accuracy"] == loop["eval"]["accuracy"]


@pytest.mark.timeout(700)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_loops_run_the_same_steps_as_single_steps(trained, backend):
    _compare(trained, backend)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", list(SLOW_BACKENDS))
def test_loops_run_the_same_steps_on_several_workers(trained, backend):
    _compare(trained, backend)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", list(SLOW_BACKENDS))
def test_two_shuffled_workers_cover_each_epoch_exactly_once(trained, backend):
    """The one-step run on 2 workers (shuffle buffer 100, 2 epochs): every id once an epoch, and shuffled."""
    root, _ = trained(backend)
    per_epoch = EXAMPLES // BATCH
    lines = [runs.id_lines(root / "one" / "ids" / f"worker_{w}.txt") for w in (0, 1)]
    for epoch in range(2):
        seen = Counter(i for worker in lines for s, ids in worker if (s - 1) // per_epoch == epoch for i in ids)
        assert seen == Counter(range(EXAMPLES)), (
            f"epoch {epoch}: missing {sorted(set(range(EXAMPLES)) - set(seen))[:10]}, "
            f"twice {[i for i, c in seen.items() if c > 1][:10]}"
        )
    first = lines[0][0][1]
    assert first != sorted(first), "the shuffle did not reorder the examples"


@pytest.mark.timeout(600)
def test_a_killed_looped_run_resumes_exactly_with_another_loop_size(tmp_path, trained):
    items = ITEMS + BACKENDS["one_device"]
    ids_file = tmp_path / "r" / "ids" / "worker_0.txt"
    kill_after_checkpoints(
        runs.command(tmp_path, "r", items, SETS + ["train.steps_per_loop=4"]), ids_file, min_lines=16, timeout=300
    )
    text = ids_file.read_text()
    first = runs.id_lines(ids_file) if text.endswith("\n") else runs.id_lines(ids_file)[:-1]
    saved = _checkpoint_steps(tmp_path / "r")[-1]
    metrics = runs.train(tmp_path, "r", items, SETS + ["train.steps_per_loop=3"], timeout=300)
    second = runs.id_lines(ids_file)[len(first) :]
    assert metrics["resumed_from_step"] == saved and metrics["steps"] == 2 * EXAMPLES // BATCH
    ref_dir, ref_metrics = trained("one_device")  # the uninterrupted run: these items and SETS, one step per call
    reference = ref_metrics["one"]
    want = runs.id_lines(ref_dir / "one" / "ids" / "worker_0.txt")
    got = [line for line in first if line[0] <= saved] + second
    assert got == want
    assert metrics["loss_per_step"] == reference["loss_per_step"][saved:]
