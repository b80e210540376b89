"""``make export FORMAT=tflite``: the .tflite file gives the model's probabilities, quantized or not."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from ingest import pipeline
from serving import export, options, tflite, trained
from serving.trained import ExportError


@pytest.fixture(scope="module")
def run(shapes_runs):
    return trained.load(shapes_runs["mirrored"])


@pytest.fixture(scope="module")
def written(run, shapes_runs) -> dict[str, bytes]:
    out = {}
    for quantize in ("none", "dynamic", "int8"):
        items = [f"RUN={run.run_dir.name}", "FORMAT=tflite", f"QUANTIZE={quantize}"]
        path = export.main(
            options.from_args(items, [f"serve.runs_dir={run.run_dir.parent}", "serve.calibration_examples=32"])
        )
        assert path == tflite.path_of(run, quantize)
        out[quantize] = path.read_bytes()
    return out


def validation_inputs(run) -> tuple[np.ndarray, np.ndarray]:
    """The eval pipeline's model inputs and the Keras model's probabilities on them."""
    built = pipeline.build(
        run.dataset, "validation", run.config.pipeline, None, batch_size=64, training=False, repeat=False
    )
    x = np.concatenate([b[run.dataset.feature_key].numpy() for b in built.dataset])
    return x, tf.nn.softmax(run.model(x, training=False)).numpy()


def tflite_probabilities(data: bytes, x: np.ndarray) -> np.ndarray:
    interpreter = tf.lite.Interpreter(model_content=data)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    rows = []
    for row in x:
        interpreter.set_tensor(inp, row[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out)[0])
    return np.stack(rows)


def test_float_tflite_gives_the_models_probabilities(run, written):
    x, want = validation_inputs(run)
    np.testing.assert_allclose(tflite_probabilities(written["none"], x), want, atol=1e-5)
    side = json.loads(tflite.path_of(run, "none").with_suffix(".json").read_text())
    assert side["bytes"] == len(written["none"]) and side["input_shape"] == [1, 32, 32, 3]
    assert side["mean"] == run.dataset.info["mean"]
    # evaluate() reads the same pipeline: its accuracy is the Keras model's.
    labels = np.concatenate(
        [
            b["label"].numpy()
            for b in pipeline.build(
                run.dataset, "validation", run.config.pipeline, None, batch_size=64, training=False, repeat=False
            ).dataset
        ]
    )
    got = tflite.evaluate(tflite.path_of(run, "none"), run)
    assert got["examples"] == len(labels) and got["accuracy"] == float(np.mean(want.argmax(-1) == labels))


def test_quantized_files_are_smaller_and_int8_runs_integer_kernels(run, written):
    assert len(written["dynamic"]) < len(written["none"]) / 2 and len(written["int8"]) < len(written["none"]) / 2
    assert tflite.float_ops(written["int8"]) == []  # every op but the input quantize / output dequantize
    assert "CONV_2D" in tflite.float_ops(written["none"])
    x, want = validation_inputs(run)
    for quantize in ("dynamic", "int8"):
        got = tflite_probabilities(written[quantize], x)
        np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-2)
        assert np.abs(got - want).max() < 0.1, quantize  # 8-bit weights (and activations): close, not equal


def test_int8_names_an_op_it_cannot_run():
    model = keras.Sequential(
        [keras.layers.InputLayer((4,)), keras.layers.Dense(4), keras.layers.Lambda(tf.math.sin), keras.layers.Dense(2)],
        name="with_sin",
    )
    calibration = lambda: ([np.full((1, 4), v, np.float32)] for v in np.linspace(-1, 1, 8))  # noqa: E731
    assert tflite.convert(model, (4,), "none", None)  # float has a SIN kernel
    with pytest.raises(ExportError, match=r"QUANTIZE=int8: .*'with_sin' still runs op SIN in float32"):
        tflite.convert(model, (4,), "int8", calibration)
    erf = keras.Sequential([keras.layers.InputLayer((4,)), keras.layers.Lambda(tf.math.erf)], name="with_erf")
    with pytest.raises(ExportError, match=r"builtin kernels cannot run op tf.Erf of model 'with_erf'"):
        tflite.convert(erf, (4,), "none", None)
