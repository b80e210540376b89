"""``DATASET=images SOURCE=<folder>``: a real Beam job over a real folder of JPEG and PNG files, real
training in a subprocess. Image ``i`` is of class ``i % 10`` (``ingest.testing.image_folder_pixels``),
so a record names the file it came from and the class it must carry."""

import collections
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ingest import datasets, pipeline
from ingest import runconfig as run_config
from ingest.datasets.images import ImageFolder
from ingest.options import DataOptions, PipelineOptions
from ingest.sources import tfrecord
from ingest.testing import DatasetContract, image_folder_pixels, write_image_folder
from stoker.errors import DataError
from tests.training import runs
from training import assembly

BEAM = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
CLASSES, PER_CLASS = 10, 30  # 300 images (150 JPEG, 150 PNG) of 32-48 px, and 2 corrupt files
SIZE = 32


def _images(source, data_dir, **kw) -> ImageFolder:
    return datasets.get(DataOptions(name="images", source=str(source), data_dir=str(data_dir), image_size=SIZE, **kw))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src") / "pets"
    write_image_folder(root, classes=CLASSES, per_class=PER_CLASS, corrupt=2)
    return root


@pytest.fixture(scope="module")
def prepared(folder, tmp_path_factory) -> tuple[ImageFolder, dict]:
    """The folder prepared with data.skip_bad_files=true (the two corrupt files skipped)."""
    data_dir = tmp_path_factory.mktemp("data")
    dataset = _images(folder, data_dir, skip_bad_files=True)
    return dataset, dataset.prepare(beam_args=BEAM)


def _records(dataset: ImageFolder, split: str) -> list[tf.train.Example]:
    out = []
    for path in dataset.files(split):
        for record in tfrecord.iter_records(path):
            out.append(tf.train.Example.FromString(record))
    return out


def _feature(example: tf.train.Example, key: str):
    f = example.features.feature[key]
    return f.bytes_list.value[0] if f.bytes_list.value else f.int64_list.value[0]


# ---- prepare ----------------------------------------------------------------------------
def test_corrupt_files_fail_the_prepare_by_name_and_leave_nothing(folder, tmp_path):
    with pytest.raises(DataError) as err:
        _images(folder, tmp_path).prepare(beam_args=BEAM)
    message = str(err.value)
    assert "2 files under SOURCE=" in message and "skip_bad_files=true" in message
    assert "class_0/broken-0.jpg (not an image file" in message and "class_1/broken-1.jpg" in message
    assert "\n" not in message
    assert not (tmp_path / "pets").exists() and not (tmp_path / "pets.partial").exists()


def test_skip_bad_files_skips_counts_and_lists_them(prepared, folder):
    dataset, info = prepared
    assert dataset.name == "pets" and dataset.root.name == "pets"  # the folder's stem
    assert info["num_skipped"] == 2
    assert sorted(b["file"] for b in info["skipped"]) == ["class_0/broken-0.jpg", "class_1/broken-1.jpg"]
    assert info["kind"] == "images" and info["source"] == str(folder)
    assert info["label_names"] == [f"class_{c}" for c in range(CLASSES)]
    # Stratified: every class keeps 10% (3 of 30) for validation.
    assert info["label_counts"] == {"train": [27] * CLASSES, "validation": [3] * CLASSES}
    assert {s: v["num_examples"] for s, v in info["splits"].items()} == {"train": 270, "validation": 30}
    assert all(shard["bytes"] > 0 for v in info["splits"].values() for shard in v["shards"])
    assert len(info["mean"]) == 3 and all(0 < s < 1 for s in info["std"])
    assert dataset.num_classes == CLASSES and dataset.label_names == tuple(info["label_names"])
    assert not dataset.stale()


def test_every_file_is_in_one_split_once_as_jpeg_with_its_class(prepared):
    dataset, _ = prepared
    seen = collections.Counter()
    for split in ("train", "validation"):
        for example in _records(dataset, split):
            file = _feature(example, "file").decode()
            seen[file] += 1
            index = int(Path(file).stem)
            assert _feature(example, "label") == image_folder_pixels(index, CLASSES)[1], file
            assert _feature(example, "image")[:2] == b"\xff\xd8", f"{file} is not stored as JPEG"
    expected = {f"class_{i % CLASSES}/{i:05d}.{'png' if i // CLASSES % 2 else 'jpg'}" for i in range(300)}
    assert set(seen) == expected and set(seen.values()) == {1}


@pytest.mark.parametrize("preset", ["optimized", "naive", "dali"])
def test_pipeline_crops_every_size_to_image_size(prepared, preset):
    dataset, _ = prepared
    opts = PipelineOptions(preset=preset)
    train = pipeline.build(dataset, "train", opts, batch_size=16, training=True, seed=1).dataset
    batch = next(iter(train))
    assert batch["image"].shape == (16, SIZE, SIZE, 3) and batch["image"].dtype == tf.float32
    assert abs(float(tf.reduce_mean(batch["image"]))) < 1.0  # normalized with the train split's moments
    evaluation = pipeline.build(dataset, "validation", opts, batch_size=16, training=False, repeat=False).dataset
    ids = [int(i) for b in evaluation for i in b["id"].numpy()]
    assert sorted(ids) == list(range(30))  # each validation example once


def test_non_jpeg_formats_are_re_encoded_and_max_side_shrinks(tmp_path):
    source = tmp_path / "mixed"
    pixels = image_folder_pixels(0, 2)[0]
    big = np.asarray(Image.fromarray(pixels).resize((120, 60)))
    for cls, fmt in (("a", "PNG"), ("a", "BMP"), ("b", "GIF"), ("b", "JPEG")):
        (source / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(big).save(source / cls / f"x.{fmt.lower()}", format=fmt)
    dataset = _images(source, tmp_path / "data", max_side=40, validation_fraction=0.0)
    info = dataset.prepare(beam_args=BEAM)
    assert info["splits"]["train"]["num_examples"] == 4
    for example in _records(dataset, "train"):
        shape = tf.io.extract_jpeg_shape(_feature(example, "image")).numpy().tolist()
        assert shape == [20, 40, 3], _feature(example, "file")  # longer side 40, aspect ratio kept


def test_train_and_validation_folders_are_the_splits(tmp_path):
    source = tmp_path / "split"
    for split, files in (("train", 10), ("val", 2)):
        for name in ("cats", "dogs"):
            _class(source / split, name, files=files)
    info = _images(source, tmp_path / "data").prepare(beam_args=BEAM)
    assert info["layout"] == "splits" and info["label_names"] == ["cats", "dogs"]
    assert info["label_counts"] == {"train": [10, 10], "validation": [2, 2]}


class TestContract(DatasetContract):
    """The public contract, but for where images are decoded: their sizes differ, so parse keeps
    the JPEG bytes and augment (or preprocess) decodes them into the element spec's image."""

    dataset_class = ImageFolder
    split_sizes = {"train": 270, "validation": 30}

    @pytest.fixture(scope="class")
    def dataset(self, prepared) -> ImageFolder:
        return prepared[0]

    def test_parse_gives_the_element_spec(self, dataset):
        example = self._parsed(dataset, "train")
        assert example["image"].dtype == tf.string and example["image"].shape == ()
        for key in ("label", "id"):
            assert dataset.element_spec[key].is_compatible_with(example[key]), key

    def test_augment_keeps_the_spec(self, dataset):
        example = self._parsed(dataset, "train")
        trained = dataset.preprocess(dataset.augment(example, tf.constant([1, 2], tf.int64)))
        for out in (trained, dataset.preprocess(example)):  # training's view, evaluation's view
            for key, spec in dataset.element_spec.items():
                assert spec.is_compatible_with(out[key]), f"{key!r}: {out[key]!r}, declared {spec}"


# ---- bad input: one line naming the thing and what to do ---------------------------------
def _class(root: Path, name: str, files: int = 2) -> None:
    (root / name).mkdir(parents=True)
    for i in range(files):
        Image.fromarray(image_folder_pixels(i, 2)[0]).save(root / name / f"{i}.png")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, r"SOURCE='.*/nowhere' does not exist: give the folder that holds one subfolder per class"),
        (lambda root: root.mkdir(), r"SOURCE='.*' is empty: put each class's images in SOURCE/<class>/"),
        (lambda root: (root.mkdir(), (root / "a.png").write_bytes(b"x")), r"has no class folders: put each class"),
        (lambda root: _class(root, "cats"), r"has one class folder \(cats\): a classifier needs at least two"),
        (
            lambda root: (_class(root, "cats"), (root / "dogs").mkdir(), (root / "dogs" / "notes.txt").write_text("")),
            r"class folder .*/dogs holds no images \(\.jpg \.jpeg \.png \.bmp \.gif\): add some, or remove the folder",
        ),
        (
            lambda root: (root.parent.mkdir(exist_ok=True), root.write_bytes(b"x")),
            r"SOURCE='.*' is a file: DATASET=images takes a folder",
        ),
    ],
    ids=["missing", "empty", "no-class-folders", "one-class", "class-without-images", "a-file"],
)
def test_bad_layouts_say_what_to_do(tmp_path, make, message):
    root = tmp_path / "nowhere"
    make(root)
    with pytest.raises(DataError, match=message) as err:
        _images(root, tmp_path / "data").prepare(beam_args=BEAM)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data" / "nowhere").exists()


def test_no_source_says_how_to_give_one(tmp_path):
    with pytest.raises(DataError, match=r"DATASET=images needs SOURCE=<folder with one subfolder per class>"):
        datasets.get(DataOptions(name="images", data_dir=str(tmp_path)))


def test_a_class_of_only_bad_files_is_named_even_when_skipping(tmp_path):
    source = tmp_path / "bad"
    _class(source, "cats")
    (source / "dogs").mkdir()
    (source / "dogs" / "0.jpg").write_bytes(b"truncated")
    with pytest.raises(DataError, match=r"class dogs of SOURCE=.* has no readable training image"):
        _images(source, tmp_path / "data", skip_bad_files=True).prepare(beam_args=BEAM)
    assert not (tmp_path / "data" / "bad").exists()


# ---- reuse and re-prepare (the path `make train` takes) ---------------------------------
def test_training_prepares_once_and_again_when_source_changes(tmp_path):
    source = tmp_path / "small"
    for name in ("cats", "dogs", "owls"):
        _class(source, name, files=4)
    items = ["DATASET=images", f"SOURCE={source}", f"DATA_DIR={tmp_path / 'data'}"]
    config = run_config.from_args(items, ["data.image_size=32"])
    info = tmp_path / "data" / "small" / "dataset_info.json"

    def ensure() -> int:
        assembly.ensure_prepared(datasets.get(config.data), config)
        return info.stat().st_mtime_ns

    first = ensure()  # not prepared: prepares
    assert ensure() == first  # unchanged SOURCE: reused
    os.utime(source / "cats" / "0.png", ns=(first, first + 10**9))  # modified
    assert datasets.get(config.data).stale().startswith(f"SOURCE={source} changed")
    second = ensure()
    assert second != first
    _class(source, "bats", files=3)  # added
    ensure()
    assert json.loads(info.read_text())["label_names"] == ["bats", "cats", "dogs", "owls"]


# ---- training ---------------------------------------------------------------------------
def test_trains_well_above_chance_and_by_name_without_source(prepared, folder, tmp_path):
    """Both runs reuse the prepared folder: ``DATASET=images SOURCE=`` and ``DATASET=pets``."""
    dataset, _ = prepared
    info = dataset.root / "dataset_info.json"
    before = info.stat().st_mtime_ns
    data_dir = dataset.options.data_dir
    common = [f"DATA_DIR={data_dir}", "BATCH=32", "STRATEGY=one_device"]
    metrics = runs.train_all(
        tmp_path,
        {
            "from-source": ["DATASET=images", f"SOURCE={folder}", "EPOCHS=3", *common],
            "by-name": ["DATASET=pets", "STEPS=2", *common],
        },
        [f"data.image_size={SIZE}", "train.checkpoint_every=0"],
        timeout=240,
    )
    assert metrics["from-source"]["eval"]["accuracy"] > 0.5  # chance is 0.1
    assert metrics["by-name"]["dataset"] == "pets" and metrics["by-name"]["steps"] == 2
    assert info.stat().st_mtime_ns == before  # neither run prepared again
