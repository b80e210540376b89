"""A folder of the user's own images (``DATASET=images``): any size in, the evaluation center crop inside.

The images are 32-48 px JPEG and PNG files (``ingest.testing.write_image_folder``); the dataset's
parse keeps the JPEG bytes and its preprocess decodes the center window at ``data.image_size``, so
the exported ``image_bytes`` signature serves a user's JPEG file as it is on disk.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ingest.testing import write_image_folder
from serving import options, predict, signatures
from tests.serving.conftest import train
from tests.serving.test_export import assert_same_logits, exported, training_path


@pytest.fixture(scope="module")
def pets(tmp_path_factory, runs_dir):
    src = tmp_path_factory.mktemp("src") / "pets"
    write_image_folder(src, classes=3, per_class=12)
    data = tmp_path_factory.mktemp("data")
    run_dir = train(
        runs_dir,
        "pets_mirrored",
        ["DATASET=images", f"SOURCE={src}", "STEPS=6", "BATCH=16", "STRATEGY=mirrored"],
        f"data.data_dir={data} data.image_size=24 data.shuffle_buffer=64",
    )
    return src, run_dir


def test_image_folder_savedmodel_matches_training_path(pets):
    _, run_dir = pets
    assert_same_logits(run_dir)


def test_users_jpeg_files_as_they_are_on_disk_give_the_training_path_class(pets, tmp_path):
    src, run_dir = pets
    want, dataset = training_path(run_dir)
    model = exported(run_dir)
    by_file = {}
    for path in dataset.files("validation"):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            example = tf.train.Example.FromString(record)
            by_file[example.features.feature["file"].bytes_list.value[0].decode()] = example.features.feature[
                "id"
            ].int64_list.value[0]
    jpegs = sorted(f for f in by_file if f.endswith(".jpg"))
    assert jpegs, by_file
    got = model.signatures[signatures.IMAGES](images=tf.constant([(src / f).read_bytes() for f in jpegs]))
    assert got["class_ids"].numpy().tolist() == [int(np.argmax(want[by_file[f]])) for f in jpegs]
    # make predict over a folder of those files: keyed by path, the same classes.
    folder = tmp_path / "incoming"
    folder.mkdir()
    for f in jpegs:
        (folder / f.replace("/", "_")).write_bytes((src / f).read_bytes())
    opts = options.from_args(
        ["RUN=" + run_dir.name, f"SOURCE={folder}", f"OUTPUT={tmp_path / 'out'}"], [f"serve.runs_dir={run_dir.parent}"]
    )
    summary = predict.main(opts)
    assert summary["predictions"] == len(jpegs)
