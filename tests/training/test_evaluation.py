"""Per-class and sliced evaluation: exact figures from a model whose predictions are fixed.

The model one-hot encodes its input (``logits = 10 * one_hot(x)``), so the prediction of each
example is the feature the test wrote: the confusion matrix, precision, recall (a class never
predicted, a class with no examples), balanced accuracy, every loss and every slice are known
exactly. One in-process ``CONFIG=tiny`` run on the small prepared ``shapes`` checks what lands in
``metrics.json``, the log and the TensorBoard event file.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from ingest import runconfig
from stoker.config import ConfigError
from strategies import make_backend
from strategies.options import StrategyOptions
from training import controller, evaluation
from training.trainer import Trainer

NAMES = ["a", "b", "c", "d"]
LABELS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDICTED = [0, 0, 0, 1, 1, 1, 3, 0, 1, 1]  # class c is never predicted; class d has no example
GROUP = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
SITE = [b"x", b"y", b"x", b"x", b"y", b"x", b"x", b"y", b"y", b"x"]
CONFUSION = [[3, 1, 0, 0], [0, 2, 0, 1], [1, 2, 0, 0], [0, 0, 0, 0]]
# Cross-entropy of logits 10 * one_hot(p) over 4 classes: right and wrong predictions.
RIGHT = math.log(math.exp(10) + 3) - 10
WRONG = math.log(math.exp(10) + 3)


def fixed_trainer(strategy: str) -> Trainer:
    """A Trainer whose model predicts ``x`` (an int stored as float) for every example."""
    options = StrategyOptions(name=strategy, devices=2 if strategy == "mirrored" else 1)
    backend = make_backend(options)
    with backend.scope():
        inputs = keras.Input((1,))
        logits = keras.layers.Lambda(lambda x: 10.0 * tf.one_hot(tf.cast(x[:, 0], tf.int32), 4))(inputs)
        model = keras.Model(inputs, logits)
        optimizer = keras.optimizers.SGD(0.1)
    return Trainer(backend, model, optimizer, global_batch=4)


def batches(**extra) -> tf.data.Dataset:
    """The ten examples in batches of 4, 4 and 2 (a partial last batch), with ``extra`` features."""
    features = {
        "x": np.array(PREDICTED, np.float32)[:, None],
        "label": np.array(LABELS, np.int64),
        "id": np.arange(10, dtype=np.int64),
        **extra,
    }
    return tf.data.Dataset.from_tensor_slices(features).batch(4)


@pytest.mark.parametrize("strategy", ["one_device", "mirrored"])
def test_confusion_precision_recall_are_exact(strategy):
    result = fixed_trainer(strategy).evaluate(batches(), "x", "label", num_classes=4, label_names=NAMES)
    assert result["examples"] == 10 and result["accuracy"] == 0.5
    assert result["loss"] == pytest.approx((5 * RIGHT + 5 * WRONG) / 10, rel=1e-6)
    assert result["confusion"] == CONFUSION
    assert result["per_class"] == [
        {"class": 0, "name": "a", "support": 4, "precision": 0.75, "recall": 0.75},
        {"class": 1, "name": "b", "support": 3, "precision": 0.4, "recall": pytest.approx(2 / 3)},
        {"class": 2, "name": "c", "support": 3, "precision": None, "recall": 0.0},
        {"class": 3, "name": "d", "support": 0, "precision": 0.0, "recall": None},
    ]
    assert result["balanced_accuracy"] == pytest.approx((0.75 + 2 / 3 + 0.0) / 3)
    assert "slices" not in result


def test_names_default_to_class_indices():
    assert evaluation.class_names(None, 3) == ["0", "1", "2"]
    assert evaluation.class_names(["a", "b"], 3) == ["0", "1", "2"]  # names that do not cover every class
    empty = evaluation.class_metrics(np.zeros((2, 2), np.int64), ["0", "1"])
    assert empty["balanced_accuracy"] is None
    assert [(c["precision"], c["recall"]) for c in empty["per_class"]] == [(None, None), (None, None)]


def test_int_slices_from_the_same_pass():
    group = np.array(GROUP, np.int64)
    result = fixed_trainer("one_device").evaluate(
        batches(group=group), "x", "label", num_classes=4, label_names=NAMES, slice_key="group"
    )
    # group 0: examples 0 2 4 6 8 -> right right right wrong wrong; group 1: 1 3 5 7 9 -> R W R W W
    assert result["slices"] == {
        "feature": "group",
        "values": [
            {"value": 0, "examples": 5, "accuracy": 0.6, "loss": pytest.approx((3 * RIGHT + 2 * WRONG) / 5)},
            {"value": 1, "examples": 5, "accuracy": 0.4, "loss": pytest.approx((2 * RIGHT + 3 * WRONG) / 5)},
        ],
    }
    assert result["confusion"] == CONFUSION  # slicing changes nothing else


def test_string_slices_are_decoded_and_sorted():
    result = fixed_trainer("one_device").evaluate(
        batches(site=np.array(SITE)), "x", "label", num_classes=4, slice_key="site"
    )
    # x: examples 0 2 3 5 6 9 -> R R W R W W; y: 1 4 7 8 -> R R W W
    assert [(v["value"], v["examples"], v["accuracy"]) for v in result["slices"]["values"]] == [
        ("x", 6, 0.5),
        ("y", 4, 0.5),
    ]
    assert [c["name"] for c in result["per_class"]] == ["0", "1", "2", "3"]


def test_float_slices_are_quantile_bins():
    score = np.arange(10, dtype=np.float32) / 10  # quartiles 0.225, 0.45, 0.675
    result = fixed_trainer("one_device").evaluate(batches(score=score), "x", "label", num_classes=4, slice_key="score")
    # bins: examples 0-2 (R R R), 3-4 (W R), 5-6 (R W), 7-9 (W W W)
    assert [(v["value"], v["examples"], v["accuracy"]) for v in result["slices"]["values"]] == [
        ("[0, 0.225)", 3, 1.0),
        ("[0.225, 0.45)", 2, 0.5),
        ("[0.45, 0.675)", 2, 0.5),
        ("[0.675, 0.9]", 3, 0.0),
    ]


def test_float_bins_with_repeated_values_and_nan():
    slices = evaluation.Slices("f")
    slices.add(np.array([1.0, 1.0, 1.0, np.nan, 1.0]), np.zeros(5), np.array([1, 1, 0, 1, 0]))
    assert [(v["value"], v["examples"]) for v in slices.result()["values"]] == [("[1, 1]", 4), ("nan", 1)]


def test_slice_feature_errors_name_the_feature():
    trainer = fixed_trainer("one_device")
    with pytest.raises(ConfigError, match=r"no feature 'source'; they have id, label, x"):
        trainer.evaluate(batches(), "x", "label", num_classes=4, slice_key="source")
    with pytest.raises(ConfigError, match=r"'x' has shape \(None, 1\) per batch; slices need one value"):
        trainer.evaluate(batches(), "x", "label", num_classes=4, slice_key="x")
    many = tf.data.Dataset.from_tensor_slices(
        {"x": np.zeros((101, 1), np.float32), "label": np.zeros(101, np.int64), "id": np.arange(101, dtype=np.int64)}
    ).batch(50)
    with pytest.raises(ConfigError, match=r"101 distinct values of 'id' \(at most 100.*coarser feature"):
        trainer.evaluate(many, "x", "label", num_classes=4, slice_key="id")


def test_scalars_and_log_lines():
    result = fixed_trainer("one_device").evaluate(
        batches(group=np.array(GROUP, np.int64)), "x", "label", num_classes=4, label_names=NAMES, slice_key="group"
    )
    tags = evaluation.scalars(result)
    assert "eval/precision/c" not in tags and "eval/recall/d" not in tags  # undefined: left out, not NaN
    assert tags["eval/precision/d"] == 0.0 and tags["eval/recall/a"] == 0.75
    assert tags["eval/slice/group=1/accuracy"] == 0.4
    assert tags["eval/balanced_accuracy"] == pytest.approx(0.4722222)
    assert evaluation.recall_line(result) == "recall: a 0.75  b 0.67  c 0.00  d -"
    assert (
        evaluation.slice_lines(result)[0]
        == f"slice group=0: 5 examples  accuracy 0.600  loss {(3 * RIGHT + 2 * WRONG) / 5:.4f}"
    )


def test_confusion_image_is_a_png():
    image = tf.io.decode_png(evaluation.confusion_png(np.array(CONFUSION), NAMES))
    assert image.dtype == tf.uint8 and image.shape[-1] in (3, 4) and min(image.shape[:2]) >= 200


def read_events(tb_dir) -> dict[str, list]:
    """tag -> [(step, value)] of every summary in the run's event files (images as their tensor)."""
    out: dict[str, list] = {}
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, tf.make_ndarray(v.tensor)))
    return out


@pytest.mark.timeout(300)
def test_tiny_run_writes_per_class_metrics_and_summaries(tmp_path, shapes_dir, caplog):
    config = runconfig.from_args(
        ["CONFIG=tiny", f"DATA_DIR={shapes_dir}", "RUN=eval", "STEPS=8", "SEED=0"],
        [
            f"data.image_size=32 data.train_examples=256 data.eval_examples=64 data.shards=4 train.runs_dir={tmp_path} "
            "train.prepare_missing=false train.eval_slices=label"
        ],
    )
    with caplog.at_level(logging.INFO, logger="stoker"):
        metrics = controller.run(config)
    final = metrics["eval"]
    confusion = np.array(final["confusion"])
    assert confusion.shape == (4, 4) and confusion.sum() == final["examples"] == 64
    assert [c["name"] for c in final["per_class"]] == ["circle", "square", "triangle", "cross"]
    assert [c["support"] for c in final["per_class"]] == confusion.sum(1).tolist() == [16, 16, 16, 16]  # label = i % 4
    assert final["accuracy"] == pytest.approx(np.trace(confusion) / 64)
    recalls = [c["recall"] for c in final["per_class"]]
    assert final["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    # Slicing by the label gives each class's recall, from the per-example figures of the same pass.
    assert [(v["value"], v["examples"]) for v in final["slices"]["values"]] == [(i, 16) for i in range(4)]
    assert [v["accuracy"] for v in final["slices"]["values"]] == pytest.approx(recalls)
    written = (tmp_path / "eval" / "metrics.json").read_text()
    assert '"per_class"' in written and '"balanced_accuracy"' in written and "NaN" not in written

    line = "recall: " + "  ".join(f"{c['name']} {c['recall']:.2f}" for c in final["per_class"])
    assert line in caplog.messages
    assert sum(m.startswith("slice label=") for m in caplog.messages) == 4
    print(line)

    events = read_events(tmp_path / "eval" / "tensorboard")
    assert events["eval/balanced_accuracy"][-1][0] == 8
    assert float(events["eval/balanced_accuracy"][-1][1]) == pytest.approx(final["balanced_accuracy"])
    assert float(events["eval/recall/circle"][-1][1]) == pytest.approx(recalls[0])
    assert float(events["eval/slice/label=3/accuracy"][-1][1]) == pytest.approx(recalls[3])
    ((step, image),) = events["eval/confusion_matrix"]
    pixels = tf.io.decode_png(image[2])  # an image summary's tensor: width, height, PNG bytes
    assert step == 8 and pixels.shape[:2] == (int(image[1]), int(image[0]))
