"""The model registry and MIXED_PRECISION=1 (bfloat16 on CPU) through the real training loop."""

from __future__ import annotations

import math

import pytest
import tensorflow as tf
import tf_keras as keras

from ingest import runconfig as run_config
from training import controller, models


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(("name", "policy"), [("shapes_cnn", "mixed_bfloat16"), ("resnet_small", "float32")])
def test_image_models_give_float32_logits(name, policy, restore_policy):
    keras.mixed_precision.set_global_policy(policy)
    model = models.build(name, (16, 16, 3), 4)
    logits = model(tf.zeros([2, 16, 16, 3]))
    assert logits.shape == (2, 4) and logits.dtype == tf.float32
    assert model.layers[0].compute_dtype == keras.mixed_precision.Policy(policy).compute_dtype


def test_clicks_mlp_and_registry_errors():
    assert models.build("clicks_mlp", (12,), 2)(tf.zeros([3, 12])).shape == (3, 2)
    assert {"shapes_cnn", "clicks_mlp", "resnet_small"} <= set(models.MODELS.names())
    with pytest.raises(KeyError, match="shapes_cnn"):
        models.build("shapes_cn", (16, 16, 3), 4)


@pytest.mark.parametrize(
    "strategy", [["STRATEGY=mirrored", "DEVICES=2"], ["STRATEGY=pipeline", "STAGES=2"]], ids=["mirrored", "pipeline"]
)
def test_mixed_precision_trains(strategy, tmp_path, restore_policy):
    config = run_config.from_args(
        ["CONFIG=tiny", "DATASET=synthetic", "MIXED_PRECISION=1", "STEPS=4", "BATCH=16", "RUN=mp", *strategy],
        [f"data.image_size=16 data.train_examples=64 data.eval_examples=32 train.runs_dir={tmp_path}"],
    )
    metrics = controller.run(config)
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert metrics["steps"] == 4 and math.isfinite(metrics["final_loss"]) and math.isfinite(metrics["eval"]["loss"])
