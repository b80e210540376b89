"""Models beyond Sequential: ``MODEL=keras:<Application>``, local weights, subclassed plug-ins,
and the one strategy that needs a Sequential saying so."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from ingest import runconfig as run_config
from stoker.config import ConfigError
from stoker.registry import RegistryError
from tests.training import runs
from training import controller, models

SHAPES_32 = "data.image_size=32 data.train_examples=256 data.eval_examples=64"


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_application_gives_float32_logits_for_the_dataset(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = models.build("keras:MobileNetV2", (32, 32, 3), 4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert (
        not isinstance(model, keras.Sequential)
        and model.get_layer("Conv1").compute_dtype == keras.mixed_precision.Policy(policy).compute_dtype
    )
    logits = model(tf.zeros([2, 32, 32, 3]))
    assert logits.shape == (2, 4) and logits.dtype == tf.float32


def test_unknown_application_and_too_small_inputs_say_what_to_do():
    with pytest.raises(RegistryError, match="did you mean keras:MobileNetV2"):
        models.build("keras:MobileNetv2", (32, 32, 3), 4)
    with pytest.raises(ConfigError, match=r"keras:MobileNetV2 cannot take inputs of shape \(16, 16, 3\).*image_size"):
        models.build("keras:MobileNetV2", (16, 16, 3), 4)
    with pytest.raises(RegistryError, match="keras:<Application>"):
        models.build("mobilenet", (32, 32, 3), 4)
    with pytest.raises(ConfigError, match="train.weights='/no/such.h5' is not a file"):
        models.build("keras:MobileNetV2", (32, 32, 3), 4, weights="/no/such.h5")


def test_local_weights_are_loaded(tmp_path):
    """A full model's weights, and a ``*notop*`` base's (which gets a new head for the classes)."""
    source = models.build("keras:MobileNetV2", (32, 32, 3), 4)
    full = tmp_path / "mobilenet_v2_shapes.h5"
    source.save_weights(full)
    loaded = models.build("keras:MobileNetV2", (32, 32, 3), 4, weights=str(full))
    for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    notop = tmp_path / "mobilenet_v2_notop.h5"
    base.save_weights(notop)
    tuned = models.build("keras:MobileNetV2", (32, 32, 3), 7, weights=str(notop))
    assert tuned(tf.zeros([1, 32, 32, 3])).shape == (1, 7)
    np.testing.assert_array_equal(tuned.get_layer("Conv1").get_weights()[0], base.get_layer("Conv1").get_weights()[0])


class _Subclassed(keras.Model):
    """A subclassed model: no layers list to split, variables made on the first call."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(name="subclassed")
        self.conv = keras.layers.Conv2D(8, 3, strides=2, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(num_classes)

    def call(self, x, training=False):
        return self.head(self.pool(self.conv(x)))


def _run(tmp_path, shapes_dir, items, sets=""):
    config = run_config.from_args(
        ["CONFIG=tiny", "STEPS=3", "BATCH=16", "RUN=m", *items],
        [f"data.data_dir={shapes_dir} {SHAPES_32} train.runs_dir={tmp_path} data.eval_examples=64 {sets}"],
    )
    return controller.run(config)


def test_subclassed_plugin_model_trains_under_one_device(tmp_path, shapes_dir):
    with models.MODELS.temporary("subclassed_test", lambda shape, n: _Subclassed(n)):
        metrics = _run(tmp_path, shapes_dir, ["MODEL=subclassed_test", "STRATEGY=one_device"])
    assert metrics["steps"] == 3 and math.isfinite(metrics["final_loss"])


def test_mobilenet_v2_trains_under_mirrored(tmp_path, shapes_dir):
    metrics = _run(tmp_path, shapes_dir, ["MODEL=keras:MobileNetV2", "STRATEGY=mirrored", "DEVICES=2"])
    assert metrics["steps"] == 3 and math.isfinite(metrics["final_loss"]) and math.isfinite(metrics["eval"]["loss"])


def test_pipeline_strategy_names_the_functional_model(tmp_path, shapes_dir):
    with pytest.raises(
        ValueError,
        match=r"STRATEGY=pipeline needs a tf_keras.Sequential.*'keras_MobileNetV2' is a "
        r"functional model.*use another STRATEGY",
    ):
        _run(tmp_path, shapes_dir, ["MODEL=keras:MobileNetV2", "STRATEGY=pipeline", "STAGES=2"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mobilenet_v2_trains_under_multi_worker(tmp_path, shapes_dir):
    items = ["CONFIG=tiny", "STRATEGY=multi_worker", "NP=2", "DEVICES=1", "MODEL=keras:MobileNetV2", "STEPS=3"]
    items += ["BATCH=16"]
    metrics = runs.train(tmp_path, "mw", items, [f"data.data_dir={shapes_dir} {SHAPES_32}"], timeout=500)
    assert metrics["steps"] == 3 and math.isfinite(metrics["final_loss"])


def test_applications_take_the_inputs_as_they_come():
    """No application rescales stoker's standardized inputs again (EfficientNet's 1/255 is undone)."""
    x = tf.random.normal([1, 32, 32, 3])
    for name, layer in (("EfficientNetB0", "normalization"), ("EfficientNetV2B0", "stem_conv")):
        model = models.build(f"keras:{name}", (32, 32, 3), 4)
        seen = model.get_layer(layer)
        probe = keras.Model(model.inputs, seen.output if layer == "normalization" else seen.input)
        np.testing.assert_allclose(probe(x).numpy(), x.numpy(), atol=1e-4, err_msg=name)
