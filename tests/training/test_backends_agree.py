"""One training loop, every backend: the same seed, data and global batch give the same model.

Each backend trains ``shapes_cnn`` for one epoch (8 steps of 32) of ``synthetic`` data in
order (no shuffle) with SGD, as a real ``python -m training`` process: multi_worker
and horovod launch 2 real worker processes (MultiWorkerMirrored on 127.0.0.1, Horovod
over Gloo). Tolerances: final loss within 1e-5 of one_device's, and every model weight
within 1e-3 x (how far one_device's weights moved from their initial values) + 1e-6:
float32 sums in another order differ by ~1e-8, a wrong gradient by the size of the move.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.training import runs

pytestmark = pytest.mark.slow

EXAMPLES, BATCH = 256, 32
ITEMS = ["CONFIG=tiny", "DATASET=synthetic", "SEED=0", "DETERMINISTIC=1", f"BATCH={BATCH}", "EPOCHS=1"]
SETS = [
    f"data.image_size=16 data.train_examples={EXAMPLES} data.eval_examples=64 pipeline.shuffle=false "
    "train.optimizer=sgd train.learning_rate=0.1 train.eval_every_epoch=false train.record_ids=true"
]
BACKENDS = {
    "one_device": ["STRATEGY=one_device"],
    "mirrored": ["STRATEGY=mirrored", "DEVICES=2"],
    "multi_worker": ["STRATEGY=multi_worker", "NP=2", "DEVICES=1"],
    "horovod": ["STRATEGY=horovod", "NP=2"],
    "pipeline": ["STRATEGY=pipeline", "DEVICES=2", "STAGES=2", "MICROBATCHES=4"],
}
LOSS_TOL, WEIGHT_REL_TOL, WEIGHT_ABS_TOL = 1e-5, 1e-3, 1e-6


def train_backends(root: Path) -> dict[str, tuple[dict, Path]]:
    """Every backend trained once under ``root``, all at the same time: name -> (metrics, run dir).

    Also what ``python -m benchmarks.measure backends`` runs for the README's measured differences.
    (Two shuffled workers covering each epoch once: checked on ``test_steps_per_loop``'s 2-worker runs.)
    """
    items = {name: ITEMS + i for name, i in BACKENDS.items()}
    metrics = runs.train_all(root, items, SETS, timeout=480)
    return {name: (m, root / name) for name, m in metrics.items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    return train_backends(tmp_path_factory.mktemp("agree"))


def initial_weights(tmp: Path) -> dict[str, np.ndarray]:
    """shapes_cnn as seeded before training, read back through a checkpoint (same keys)."""
    import tf_keras as keras

    from training import models

    keras.utils.set_random_seed(0)
    model = models.build("shapes_cnn", (16, 16, 3), 4)
    tf.train.Checkpoint(model=model).save(str(tmp / "init" / "ckpt"))
    reader = tf.train.load_checkpoint(str(tmp / "init"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("model/")}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", [n for n in BACKENDS if n != "one_device"])
def test_same_loss_and_weights_as_one_device(trained, name, tmp_path):
    ref_metrics, ref_dir = trained["one_device"]
    metrics, run_dir = trained[name]
    assert metrics["steps"] == ref_metrics["steps"] == EXAMPLES // BATCH
    assert metrics["final_loss"] == pytest.approx(ref_metrics["final_loss"], abs=LOSS_TOL)
    assert metrics["eval"]["loss"] == pytest.approx(ref_metrics["eval"]["loss"], abs=LOSS_TOL)
    ref, got, init = runs.model_weights(ref_dir), runs.model_weights(run_dir), initial_weights(tmp_path)
    assert set(got) == set(ref) and set(init) >= set(ref)
    moved = max(float(np.max(np.abs(ref[k] - init[k]))) for k in ref)
    assert moved > 1e-4, "training did not move the weights: the comparison would say nothing"
    for key in ref:
        diff = float(np.max(np.abs(got[key] - ref[key])))
        assert diff <= WEIGHT_REL_TOL * moved + WEIGHT_ABS_TOL, f"{name}: {key} differs by {diff} (moved {moved})"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["multi_worker", "horovod"])
def test_two_workers_see_each_id_once(trained, name):
    _, run_dir = trained[name]
    assert sorted(p.name for p in (run_dir / "ids").glob("*.txt")) == ["worker_0.txt", "worker_1.txt"]
    seen = runs.ids_seen(run_dir)
    assert seen == Counter(range(EXAMPLES)), (
        f"missing {sorted(set(range(EXAMPLES)) - set(seen))[:10]}, twice {[i for i, c in seen.items() if c > 1][:10]}"
    )
