"""``make export``: the SavedModel's signatures give the training path's logits, and bad runs fail clearly.

The training path is what evaluation runs: the run's eval pipeline (tf.data: the dataset's parse,
its preprocess per example, batches) into the model restored from the chief's checkpoint. The
served path is the exported SavedModel, loaded back, on the validation split's raw records as a
client has them (serialized tf.Example; for clicks each Parquet row written as one).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from ingest import datasets, pipeline
from serving import export, options, records, signatures, trained
from serving.trained import ExportError
from training import models

TOL = 1e-5  # logits: the same float32 ops, batched differently


def training_path(run_dir) -> tuple[dict[int, np.ndarray], object]:
    """Example id -> logits through the run's eval pipeline and its restored model; and the dataset."""
    config = trained.read_config(run_dir)
    dataset = datasets.get(config.data)
    spec = dataset.element_spec[dataset.feature_key]
    model = models.build(trained.model_name(config, dataset), tuple(spec.shape), dataset.num_classes)
    tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(str(run_dir / "checkpoints"))).expect_partial()
    built = pipeline.build(dataset, "validation", config.pipeline, None, batch_size=16, training=False, repeat=False)
    out = {}
    for batch in built.dataset:
        logits = model(batch[dataset.feature_key], training=False).numpy()
        out.update(zip(batch["id"].numpy().tolist(), logits, strict=True))
    return out, dataset


def exported(run_dir) -> tf.Module:
    return tf.saved_model.load(
        str(export.main(options.from_args([f"RUN={run_dir.name}"], [f"serve.runs_dir={run_dir.parent}"])))
    )


def served_logits(model: tf.Module, dataset) -> dict[int, np.ndarray]:
    """Example id -> logits from ``serving_default`` on the validation files' records, 50 at a time."""
    raw = [r for path in dataset.files("validation") for r in records.file_records(dataset, path)]
    out = {}
    for start in range(0, len(raw), 50):
        got = model.signatures[signatures.EXAMPLES](examples=tf.constant(raw[start : start + 50]))
        out.update(zip(got["ids"].numpy().tolist(), got["logits"].numpy(), strict=True))
    return out


def assert_same_logits(run_dir) -> tuple[tf.Module, object, dict[int, np.ndarray]]:
    want, dataset = training_path(run_dir)
    model = exported(run_dir)
    got = served_logits(model, dataset)
    assert sorted(got) == sorted(want) and len(want) == dataset.num_examples("validation")
    worst = max(float(np.abs(got[i] - want[i]).max()) for i in want)
    assert worst <= TOL, f"largest logit difference {worst} over {len(want)} examples"
    return model, dataset, want


@pytest.mark.parametrize("backend", ["mirrored", "pipeline"])
def test_shapes_savedmodel_matches_training_path(shapes_runs, backend):
    model, dataset, want = assert_same_logits(shapes_runs[backend])
    meta = json.loads((shapes_runs[backend] / "export" / "8" / export.META).read_text())
    assert meta["step"] == 8 and set(meta["signatures"]) == {signatures.EXAMPLES, signatures.IMAGES}
    # The class names and probabilities come with the class ids.
    raw = list(records.file_records(dataset, dataset.files("validation")[0]))[:4]
    got = model.signatures[signatures.EXAMPLES](examples=tf.constant(raw))
    ids = got["class_ids"].numpy()
    assert [n.decode() for n in got["class_names"].numpy()] == [dataset.label_names[i] for i in ids]
    np.testing.assert_allclose(got["probabilities"].numpy().sum(-1), 1.0, atol=1e-6)


def test_raw_jpeg_bytes_give_the_training_path_class(shapes_runs):
    """A client sends each validation image's JPEG bytes alone (no tf.Example): same class, same logits."""
    want, dataset = training_path(shapes_runs["mirrored"])
    model = exported(shapes_runs["mirrored"])
    jpegs, ids = [], []
    for path in dataset.files("validation"):
        for record in records.file_records(dataset, path):
            example = tf.train.Example.FromString(record)
            jpegs.append(example.features.feature["image"].bytes_list.value[0])
            ids.append(example.features.feature["id"].int64_list.value[0])
    got = model.signatures[signatures.IMAGES](images=tf.constant(jpegs))
    classes = got["class_ids"].numpy()
    assert classes.tolist() == [int(np.argmax(want[i])) for i in ids]
    assert float(np.abs(got["logits"].numpy() - np.stack([want[i] for i in ids])).max()) <= TOL


def test_clicks_savedmodel_matches_training_path(clicks_run):
    model, _, _ = assert_same_logits(clicks_run)
    assert signatures.IMAGES not in model.signatures  # a table of numbers takes no images


def test_plugin_dataset_under_pipeline_matches_training_path(rings_pipeline_run, rings_registered):
    assert_same_logits(rings_pipeline_run)


def test_saved_model_cli_runs_the_image_bytes_signature(shapes_runs, tmp_path):
    """The request README's TF Serving example sends (one JPEG, image_bytes), run by TensorFlow's saved_model_cli."""
    run_dir = shapes_runs["mirrored"]
    model = exported(run_dir)
    dataset = datasets.get(trained.read_config(run_dir).data)
    raw = list(records.file_records(dataset, dataset.files("validation")[0]))[:3]
    jpegs = [tf.train.Example.FromString(r).features.feature["image"].bytes_list.value[0] for r in raw]
    np.save(tmp_path / "request.npy", np.array(jpegs, dtype=object), allow_pickle=True)
    cli = shutil.which("saved_model_cli", path=str(sys.executable).rsplit("/", 1)[0])
    cmd = [cli, "run", "--dir", str(export.latest(run_dir)), "--tag_set", "serve"]
    cmd += ["--signature_def", signatures.IMAGES, "--inputs", f"images={tmp_path / 'request.npy'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    want = model.signatures[signatures.IMAGES](images=tf.constant(jpegs))["class_ids"].numpy()
    assert f"Result for output key class_ids:\n{want}" in out.stdout, out.stdout


# ---- bad input -------------------------------------------------------------------------------


def test_run_without_checkpoint_is_named(shapes_runs, tmp_path):
    run = tmp_path / "runs" / "nockpt"
    run.mkdir(parents=True)
    shutil.copy(shapes_runs["mirrored"] / "config.json", run / "config.json")
    with pytest.raises(ExportError, match=r"nockpt/checkpoints holds no checkpoint.*make train RUN=nockpt"):
        export.main(options.from_args(["RUN=nockpt"], [f"serve.runs_dir={tmp_path / 'runs'}"]))


def test_run_that_is_not_a_run_is_named(shapes_runs):
    with pytest.raises(
        ExportError, match=r"config.json does not exist: RUN=nope is not a training run.*shapes_mirrored"
    ):
        export.main(options.from_args(["RUN=nope"], [f"serve.runs_dir={shapes_runs['mirrored'].parent}"]))


def test_dataset_not_registered_any_more_is_named(rings_pipeline_run):
    """The plug-in's package is gone (its registration ended with its fixture)."""
    with pytest.raises(ExportError, match=r"DATASET=rings, which is not registered any more.*stoker.datasets"):
        trained.load(rings_pipeline_run)


def test_missing_step_and_bad_options_are_named(shapes_runs):
    with pytest.raises(ExportError, match=r"no checkpoint of STEP=3; it has steps \[8\]"):
        trained.checkpoint_path(shapes_runs["mirrored"], 3)
    with pytest.raises(Exception, match="QUANTIZE=int8 is for FORMAT=tflite"):
        options.from_args(["RUN=x", "QUANTIZE=int8"])
    with pytest.raises(Exception, match="unknown make variable FORMATS.*did you mean FORMAT"):
        options.from_args(["FORMATS=tflite"])


def test_a_dataset_with_records_no_client_can_send_is_refused():
    """Parquet rows without declared tf.Example features (DATASET=table today): one clear error, not a trace."""
    from ingest.datasets.table import Table

    assert Table.example_features is datasets.Dataset.example_features
    with pytest.raises(ExportError, match=r"stores parquet records and declares no tf.Example features"):
        signatures.records_parser(Table.__new__(Table))
