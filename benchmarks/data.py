"""The benchmark data: ``shapes`` at 256 px in TFRecord shards, ``clicks`` in Parquet, and the
same JPEGs as loose files and DALI index files for the other loaders. Made once, then reused.
"""

from __future__ import annotations

import logging
from pathlib import Path

from benchmarks.config import BenchConfig

log = logging.getLogger(__name__)
JPEG_DIR = "shapes-jpeg-folders"  # <label>/<id>.jpg per example, for the PyTorch DataLoader


def _shapes_options(cfg: BenchConfig):
    from ingest.options import DataOptions

    return DataOptions(
        name="shapes",
        data_dir=cfg.data_dir,
        image_size=cfg.image_size,
        train_examples=cfg.image_examples,
        eval_examples=cfg.batch,
        shards=cfg.image_shards,
    )


def shapes(cfg: BenchConfig):
    """The prepared ``shapes`` (:class:`~ingest.datasets.shapes.Shapes`), generated when missing or stale."""
    from ingest.datasets.shapes import Shapes

    ds = Shapes(_shapes_options(cfg))
    info = ds.info
    fresh = (
        (
            info.get("image_size") == cfg.image_size
            and len(info["splits"]["train"]["shards"]) == cfg.image_shards
            and info["splits"]["train"]["num_examples"] == cfg.image_examples
        )
        if info
        else False
    )
    if not fresh:
        log.info(
            "generating shapes: %d examples at %d px in %d shards under %s",
            cfg.image_examples,
            cfg.image_size,
            cfg.image_shards,
            cfg.data_dir,
        )
        # Smoke runs write a few hundred images: one in-memory Beam worker starts fastest.
        quick = ["--direct_num_workers=1", "--direct_running_mode=in_memory"] if cfg.quick else None
        ds.prepare(beam_args=quick)
    return ds


def clicks(cfg: BenchConfig):
    """The prepared ``clicks`` (Parquet), generated when missing or of another size."""
    from ingest.datasets.clicks import Clicks
    from ingest.options import DataOptions

    ds = Clicks(DataOptions(name="clicks", data_dir=cfg.data_dir, train_examples=cfg.clicks_rows, eval_examples=1000))
    if ds.num_examples("train") != cfg.clicks_rows:
        ds.prepare()
    return ds


def table(cfg: BenchConfig):
    """``clicks``' rows as a CSV prepared by ``DATASET=table`` (the ad bucket as text), made once."""
    import csv

    import numpy as np

    from ingest.datasets.clicks import NUMERIC
    from ingest.datasets.clicks import table as click_rows
    from ingest.datasets.table import Table
    from ingest.options import DataOptions

    source = Path(cfg.data_dir) / "table-source" / "clicks.csv"
    if not source.is_file():  # the rows of clicks' train split: value = f(seed, row), as clicks has them
        rows = click_rows("train", 0, cfg.clicks_rows, 0)
        source.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{source}.tmp", "w", newline="") as f:
            out = csv.writer(f)
            out.writerow([*NUMERIC, "ad_bucket", "label"])
            buckets = np.char.add("b", (rows["ad"] % 10).astype(str))
            out.writerows(zip(*(rows[c].round(6) for c in NUMERIC), buckets, rows["label"], strict=True))
        Path(f"{source}.tmp").replace(source)
    ds = Table(
        DataOptions(
            name="table",
            source=str(source),
            label="label",
            prepared_name="clicks-table",
            data_dir=cfg.data_dir,
            validation_fraction=0.005,  # about clicks' train rows for training, as clicks reads them
        )
    )
    if not ds.is_prepared() or ds.stale():
        ds.prepare(beam_args=["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    return ds


def jpeg_files(cfg: BenchConfig) -> list[tuple[str, int]]:
    """(path, label) of the train JPEGs of ``shapes`` as loose files in class folders, written once.

    ``<label>/<id>.jpg``: what a PyTorch user has (torchvision's ``ImageFolder`` layout).
    """
    from ingest.sources import tfrecord

    out = Path(cfg.data_dir) / JPEG_DIR
    done = out / ".complete"
    if not done.is_file():
        import tensorflow as tf

        for path in shapes(cfg).files("train"):
            for record in tfrecord.iter_records(path):
                ex = tf.train.Example.FromString(record).features.feature
                folder = out / str(ex["label"].int64_list.value[0])
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{ex['id'].int64_list.value[0]:07d}.jpg").write_bytes(ex["image"].bytes_list.value[0])
        done.write_text("ok\n")
    return sorted((str(p), int(p.parent.name)) for p in out.glob("*/*.jpg"))


IMAGE_FOLDER = "shapes-folder"  # the loose JPEGs of JPEG_DIR prepared as DATASET=images (NAME=shapes-folder)


def image_folder(cfg: BenchConfig):
    """The loose JPEGs of :func:`jpeg_files` prepared as a user's image folder (``DATASET=images``),
    every file in train; prepared again when missing or when the folder changed."""
    from ingest.datasets.images import ImageFolder
    from ingest.options import DataOptions

    jpeg_files(cfg)
    options = DataOptions(
        name="images",
        source=str(Path(cfg.data_dir) / JPEG_DIR),
        prepared_name=IMAGE_FOLDER,
        data_dir=cfg.data_dir,
        image_size=cfg.crop,  # the random resized crop's side, as ImagenetShapes(crop=cfg.crop)
        validation_fraction=0.0,
        shards=cfg.image_shards,
    )
    ds = ImageFolder(options)
    if not ds.is_prepared() or ds.stale():
        log.info("preparing %s as an image folder under %s", options.source, cfg.data_dir)
        ds.prepare()
    return ds


PHOTO_FOLDER = "photos-1024x768-folder"  # the decode suite's photos as loose JPEGs in class folders


def photo_folder(cfg: BenchConfig):
    """The ``decode`` suite's 1024x768 photos as a user's image folder (``DATASET=images``), every
    file in train, with ``data.scaled_decode`` on and the benchmark's crop as ``data.image_size``:
    what a user training on phone or web photos runs. Written and prepared once."""
    import tensorflow as tf

    from benchmarks import decode
    from ingest.datasets.images import ImageFolder
    from ingest.options import DataOptions

    source = Path(cfg.data_dir) / f"{PHOTO_FOLDER}-jpeg"
    done = source / ".complete"
    if not done.is_file():
        for i, record in enumerate(tf.data.TFRecordDataset(decode.photos(cfg))):
            ex = tf.io.parse_single_example(record, decode.FEATURES)
            folder = source / str(int(ex["label"]))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:05d}.jpg").write_bytes(ex["image"].numpy())
        done.write_text("ok\n")
    options = DataOptions(
        name="images",
        source=str(source),
        prepared_name=PHOTO_FOLDER,
        data_dir=cfg.data_dir,
        image_size=cfg.crop,
        scaled_decode=True,
        validation_fraction=0.0,
        shards=decode.SHARDS,
    )
    ds = ImageFolder(options)
    if not ds.is_prepared() or ds.stale():
        log.info("preparing %s as an image folder under %s", source, cfg.data_dir)
        ds.prepare()
    return ds


def dali_index(cfg: BenchConfig, files: list[str]) -> list[str]:
    """DALI's index files of the ``shapes`` shards (``ingest.dali.index_files``: made once, reused)."""
    from ingest import dali

    return dali.index_files(shapes(cfg), files)


def prepare_all(cfg: BenchConfig) -> dict[str, object]:
    """Make every file the suites read (the first step of a run); returns what exists."""
    if cfg.dataset:
        return {"dataset": cfg.dataset}
    image = shapes(cfg)
    tab = clicks(cfg)
    files = image.files("train")
    return {
        "shapes_files": len(files),
        "shapes_examples": image.num_examples("train"),
        "jpegs": len(jpeg_files(cfg)),
        "dali_index": len(dali_index(cfg, files)),
        "clicks_rows": tab.num_examples("train"),
        "image_folder_examples": image_folder(cfg).num_examples("train"),
        "table_rows": table(cfg).num_examples("train"),
        "photo_folder_examples": photo_folder(cfg).num_examples("train"),
    }
