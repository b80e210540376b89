"""``make export RUN=<run> FORMAT=tflite QUANTIZE=none|dynamic|int8``: the run's model as a .tflite file.

The file holds the model alone, from the model input to class probabilities: TFLite's builtin
ops have no tf.Example parser and no JPEG decoder, so a client runs the dataset's preprocess
before it (for ``shapes``: ``(pixels / 255 - mean) / std`` with ``dataset_info.json``'s mean and
std, which the sidecar JSON repeats). Input ``[1, *input shape]`` float32 (resizable in the
batch dimension); output ``probabilities`` float32 ``[batch, classes]``.

- ``none``: float32 weights and ops.
- ``dynamic``: weights stored as int8, dequantized or computed in int8 with float activations
  (``tf.lite.Optimize.DEFAULT`` without calibration data).
- ``int8``: weights and activations int8 (``TFLITE_BUILTINS_INT8`` only, float input and output),
  the activation ranges calibrated on ``serve.calibration_examples`` training examples drawn
  through the run's own evaluation pipeline (its parse and preprocess, no augmentation). An op
  with no int8 kernel stops the export with its name.

Written atomically to ``runs/<run>/export/tflite/<step>-<quantize>.tflite`` beside a ``.json``
(input shape, class names, normalization, size). TF Serving ignores the non-numbered folder.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow.lite.python.convert_phase import ConverterError

from ingest import pipeline
from serving import export as exports
from serving import trained
from serving.options import ServeOptions
from serving.trained import ExportError
from stoker import files

log = logging.getLogger("stoker")
Calibration = Callable[[], Iterator[list[np.ndarray]]]


def path_of(run: trained.Trained, quantize: str) -> Path:
    return exports.export_dir(run.run_dir) / "tflite" / f"{run.step}-{quantize}.tflite"


def convert(model: keras.Model, input_shape: tuple[int, ...], quantize: str, calibration: Calibration | None) -> bytes:
    """Host: ``model`` (inputs ``[batch, *input_shape]`` float32) to TFLite bytes giving probabilities."""
    fn = tf.function(lambda x: {"probabilities": tf.nn.softmax(tf.cast(model(x, training=False), tf.float32))})
    concrete = fn.get_concrete_function(tf.TensorSpec([1, *input_shape], tf.float32, name="inputs"))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    if quantize in ("dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "int8":
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        data = converter.convert()
    except (ConverterError, RuntimeError, ValueError) as err:
        ops = _ops_named(str(err))
        what = f"op {', '.join(ops)}" if ops else "an op"
        kernels = "int8 kernels (TFLITE_BUILTINS_INT8)" if quantize == "int8" else "builtin kernels"
        instead = "QUANTIZE=dynamic or none, or " if quantize == "int8" else ""
        raise ExportError(
            f"QUANTIZE={quantize}: TFLite's {kernels} cannot run {what} of model {model.name!r} ({_reason(err)}); "
            f"use {instead}replace that op in the model"
        ) from None
    left = float_ops(data) if quantize == "int8" else []
    if left:  # the converter keeps an op with no int8 kernel in float32, between a dequantize and a quantize
        raise ExportError(
            f"QUANTIZE=int8: the calibrated model of {model.name!r} still runs op {', '.join(left)} in float32: TFLite "
            "has no int8 kernel for it; use QUANTIZE=dynamic or none, or replace that op in the model"
        )
    return data


def float_ops(data: bytes) -> list[str]:
    """Ops of a .tflite model (besides QUANTIZE and DEQUANTIZE) that take a float32 tensor, once each."""
    interpreter = tf.lite.Interpreter(
        model_content=data,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    names = [
        op["op_name"]
        for op in interpreter._get_ops_details()  # the only listing of a model's ops in TF 2.16's Python API
        if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE") and any(dtypes.get(i) == np.float32 for i in op["inputs"])
    ]
    return list(dict.fromkeys(names))


def _ops_named(message: str) -> list[str]:
    """Op names in a converter message (``tf.Cos``, ``'COS'``, ``op: COS``), in order, once each."""
    found = re.findall(r"\b(tf\.[A-Z]\w+)|op(?:eration)?s?:? '?([A-Z][A-Z0-9_]+)'?", message)
    names = [a or b for a, b in found]
    return list(dict.fromkeys(names))


def _reason(err: Exception) -> str:
    """The converter's own sentence about the op (its message is mostly MLIR source locations)."""
    text = str(err)
    said = re.findall(r"error: ('[^']+' op [^\n]*)", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (said[0] if said else lines[0] if lines else type(err).__name__)[:300]


def calibration(run: trained.Trained, examples: int) -> Calibration:
    """Model inputs of ``examples`` training examples, one per call, through the run's evaluation pipeline."""
    config, dataset = run.config, run.dataset

    def batches() -> Iterator[list[np.ndarray]]:
        built = pipeline.build(
            dataset, config.data.train_split, config.pipeline, None, batch_size=1, training=False, repeat=False
        )
        for batch in built.dataset.take(examples):
            yield [tf.cast(batch[dataset.feature_key], tf.float32).numpy()]

    return batches


def export(run: trained.Trained, options: ServeOptions) -> Path:
    """Host: write the .tflite file of ``options.quantize`` and its sidecar JSON."""
    spec = run.dataset.element_spec[run.dataset.feature_key]
    calib = calibration(run, options.calibration_examples) if options.quantize == "int8" else None
    data = convert(run.model, tuple(spec.shape), options.quantize, calib)
    path = path_of(run, options.quantize)
    files.atomic_write(path, data)
    info = run.dataset.info
    side = {
        "run": run.run_dir.name,
        "dataset": run.dataset.name,
        "step": run.step,
        "quantize": options.quantize,
        "bytes": len(data),
        "input_shape": [1, *spec.shape.as_list()],
        "class_names": list(run.dataset.label_names),
        "preprocess": f"{type(run.dataset).__name__}.preprocess (run it before the model)",
        **({"mean": info["mean"], "std": info["std"]} if "mean" in info else {}),
    }
    files.atomic_write(path.with_suffix(".json"), json.dumps(side, indent=2))
    log.info("wrote %s (%d bytes, QUANTIZE=%s)", path, len(data), options.quantize)
    return path


def evaluate(path: Path, run: trained.Trained, *, split: str = "", limit: int = 0) -> dict[str, Any]:
    """Host: accuracy of the .tflite file on ``split`` (the eval split) through the run's evaluation
    pipeline, and the interpreter's time per example (batch 1, median, seconds), this process's CPU."""
    config, dataset = run.config, run.dataset
    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    built = pipeline.build(
        dataset, split or config.data.eval_split, config.pipeline, None, batch_size=1, training=False, repeat=False
    )
    correct = n = 0
    times = []
    for batch in built.dataset.take(limit) if limit else built.dataset:
        interpreter.set_tensor(inp, tf.cast(batch[dataset.feature_key], tf.float32).numpy())
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
        probs = interpreter.get_tensor(out)
        correct += int(np.argmax(probs[0]) == int(batch[dataset.label_key][0]))
        n += 1
    return {"examples": n, "accuracy": correct / n if n else None, "seconds_per_example": float(np.median(times))}
