"""The default run's checkpoint: model, optimizer, step and at most 64 KB of input state.

The default config (mirrored over 2 devices, batch 64, a 4096-example shuffle window, the
optimized pipeline) on the small prepared ``shapes``, beside the same run with
``pipeline.iterator_checkpoint=true`` (TensorFlow's iterator, buffers included). Prints both
checkpoints' sizes and save times; holds the size bounds (timings are for ``make bench``).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.training import runs

pytestmark = pytest.mark.slow
ITEMS = ["STEPS=8", "SEED=0"]


def _sets(shapes_dir: str) -> list[str]:
    return [
        f"data.data_dir={shapes_dir} data.image_size=32 data.train_examples=256 data.eval_examples=64 data.shards=4 "
        "train.checkpoint_every=4 train.eval_every_epoch=false train.prepare_missing=false"
    ]


def _tensor_bytes(run_dir) -> dict[str, int]:
    """Bytes of the newest checkpoint's tensors, by kind: input state, iterator, the rest."""
    path = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    out = {"input": 0, "iterator": 0, "model_and_optimizer": 0}
    dtypes = reader.get_variable_to_dtype_map()
    for key in reader.get_variable_to_shape_map():
        if dtypes[key] == tf.variant:  # the iterator's state: counted below from the files
            continue
        value = reader.get_tensor(key)
        if isinstance(value, bytes):  # a string scalar
            size = len(value)
        else:
            size = sum(len(v) for v in np.ravel(value)) if value.dtype == object else np.asarray(value).nbytes
        out["input" if key.startswith("input_") else "model_and_optimizer"] += size
    files = sorted((run_dir / "checkpoints").glob(f"{path.rsplit('/', 1)[1]}.*"))
    out["files"] = sum(f.stat().st_size for f in files)
    if any(dtypes[k] == tf.variant for k in dtypes):
        out["iterator"] = out["files"] - out["input"] - out["model_and_optimizer"]
    return out


@pytest.mark.timeout(400)
def test_default_run_keeps_the_input_as_a_few_bytes(tmp_path, shapes_dir):
    metrics = runs.train_all(
        tmp_path,
        {"position": ITEMS, "iterator": ITEMS},
        _sets(shapes_dir),
        timeout=360,
        extra_sets={"iterator": ["pipeline.iterator_checkpoint=true"]},
    )
    pos, it = _tensor_bytes(tmp_path / "position"), _tensor_bytes(tmp_path / "iterator")
    for name, sizes in (("position", pos), ("iterator", it)):
        m = metrics[name]
        print(
            f"{name}: checkpoint {sizes['files'] / 2**20:.2f} MiB (model and optimizer "
            f"{sizes['model_and_optimizer'] / 2**20:.2f} MiB, input {sizes['input']} B, iterator "
            f"{sizes['iterator'] / 2**20:.2f} MiB); save median {m['checkpoint_save_s_median'] * 1000:.0f} ms "
            f"over {m['checkpoint_saves']} saves; {m['examples_per_sec']:.0f} examples/s with saves"
        )
    assert metrics["position"]["input_state"] == "position" and metrics["iterator"]["input_state"] == "iterator"
    assert 0 < pos["input"] <= 65536 and metrics["position"]["input_state_bytes"] <= 65536
    assert pos["iterator"] == 0
    assert pos["files"] <= pos["model_and_optimizer"] + 65536 + 16384, pos  # + the object graph and index
    assert it["iterator"] > 10 * pos["input"], "the iterator checkpoint should carry its buffers"
    assert metrics["position"]["input_position"] == {"epoch": 2, "consumed": 0, "seed": 0}  # 8 x 64 = 2 x 256
    assert metrics["position"]["steps"] == metrics["iterator"]["steps"] == 8
