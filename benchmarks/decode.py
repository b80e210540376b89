"""Reduced-scale JPEG decode: random-resized crop at 224 on 1024x768 photos, tf.data vs DALI CPU.

The set: ``PHOTOS`` 1024x768 JPEGs (quality 90) with a photo-like spectrum (noise at several
scales, upsampled bicubically: smooth regions and edges, not white noise, which no photo is),
written once as TFRecord shards under ``<data_dir>/photos-1024x768/`` with DALI index files.
Rows of one suite, every one reading those shards, decoding a random window (area 0.08-1,
aspect 3/4-4/3), resizing it to 224, flipping and normalizing, in batches of the benchmark batch,
on every core, with the same warm-up (one pass over the set) and the same windows:

- ``tf.data, full-scale window decode``: ``decode_and_crop_jpeg`` of the window (stoker today);
- ``tf.data, reduced-scale window decode``: the same window decoded at 1/2, 1/4 or 1/8 DCT scale
  when it is at least that many times 224 on both sides (``ingest.image_ops``, ``scaled=True``);
- ``DALI CPU``: ``fn.decoders.image_random_crop`` (DALI's region-of-interest decode), resize,
  ``crop_mirror_normalize``;
- the full-scale row again (A/A repeat: the suite's noise).

Fidelity: on the first ``PSNR_IMAGES`` images whose window is decoded at reduced scale, each
path's 224x224 crop against the same window decoded at full scale and resized with antialiasing
(the best-quality reference), as median PSNR in dB.
Target (issue 14), written before the run: reduced-scale at least 1.3x DALI CPU.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from benchmarks import dali_loader, rates
from benchmarks.config import BenchConfig
from benchmarks.runner import SuiteResult, Target, row
from ingest import image_ops

log = logging.getLogger(__name__)
HEIGHT, WIDTH = 768, 1024
PHOTOS = 512  # images in the set (quick: 32)
SHARDS = 4
PSNR_IMAGES = 64
FULL = "tf.data, full-scale window decode"
SCALED = "tf.data, reduced-scale window decode"
DALI = "DALI CPU (image_random_crop)"
AA = " (A/A repeat)"
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
FEATURES = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}


def _photo(rng: np.random.Generator) -> np.ndarray:
    """A 1024x768 RGB uint8 image with energy at every scale (coarse layout, mid detail, fine texture)."""
    out = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    for (h, w), weight in (((6, 8), 90.0), ((24, 32), 40.0), ((96, 128), 18.0), ((384, 512), 6.0)):
        noise = rng.normal(0.0, 1.0, (1, h, w, 3)).astype(np.float32)
        out += weight * tf.image.resize(noise, [HEIGHT, WIDTH], method="bicubic")[0].numpy()
    return np.clip(out + 128.0, 0, 255).astype(np.uint8)


def photos(cfg: BenchConfig) -> list[str]:
    """The TFRecord shards of the set, written once (a ``done`` file marks a complete set)."""
    count = 32 if cfg.quick else PHOTOS
    folder = Path(cfg.data_dir) / f"photos-{WIDTH}x{HEIGHT}-{count}"
    files = [str(folder / f"train-{s:05d}-of-{SHARDS:05d}.tfrecord") for s in range(SHARDS)]
    if (folder / "done").exists():
        return files
    folder.mkdir(parents=True, exist_ok=True)
    log.info("writing %d %dx%d JPEGs into %s", count, WIDTH, HEIGHT, folder)
    rng = np.random.default_rng(1024)
    writers = [tf.io.TFRecordWriter(f) for f in files]
    for i in range(count):
        jpeg = tf.io.encode_jpeg(_photo(rng), quality=90).numpy()
        ex = tf.train.Example(
            features=tf.train.Features(
                feature={
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 4])),
                }
            )
        )
        writers[i % SHARDS].write(ex.SerializeToString())
    for w in writers:
        w.close()
    (folder / "done").write_text("ok\n")
    return files


def _index(files: list[str]) -> list[str]:
    """DALI's index file beside each shard (made once)."""
    from ingest import dali

    for shard in files:
        if not Path(shard + ".idx").exists():
            dali.write_index(shard, Path(shard + ".idx"))
    return [shard + ".idx" for shard in files]


def tf_pipeline(cfg: BenchConfig, files: list[str], *, scaled: bool) -> tf.data.Dataset:
    mean, std = tf.constant(MEAN), tf.constant(STD)

    def work(i, record):
        ex = tf.io.parse_single_example(record, FEATURES)
        seed = tf.stack([tf.constant(0, tf.int64), i])
        image = image_ops.random_resized_crop(ex["image"], seed, crop=cfg.crop, fused=True, scaled=scaled)
        return image_ops.normalize(image, mean, std), ex["label"]

    ds = tf.data.TFRecordDataset(files, num_parallel_reads=len(files)).repeat().enumerate()
    ds = ds.map(work, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.batch(cfg.batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def dali_pipeline(cfg: BenchConfig, files: list[str]) -> tf.data.Dataset:
    pipe = dali_loader.pipeline(
        files,
        _index(files),
        batch=cfg.batch,
        threads=cfg.cores,
        crop=cfg.crop,
        mean=MEAN,
        std=STD,
        shuffle_buffer=min(cfg.shuffle_buffer, 64),
    )
    return dali_loader.dataset(pipe, batch=cfg.batch, crop=cfg.crop, threads=cfg.cores)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def fidelity(cfg: BenchConfig, files: list[str]) -> dict[str, float]:
    """Median PSNR (dB) of each tf.data path's crop against the antialiased full-scale reference,
    and the share of windows that were decoded at reduced scale."""
    jpegs = [r.numpy() for r in tf.data.TFRecordDataset(files).take(PSNR_IMAGES)]
    full, scaled, reduced = [], [], 0
    for i, record in enumerate(jpegs):
        jpeg = tf.io.parse_single_example(record, FEATURES)["image"]
        seeds = tf.random.experimental.stateless_split(tf.constant([0, i], tf.int64), num=2)
        window = image_ops.crop_window(tf.io.extract_jpeg_shape(jpeg), seeds[0])
        whole = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
        ref = tf.image.resize(whole, [cfg.crop, cfg.crop], method="bilinear", antialias=True).numpy()
        # the same window and flip as the pipelines: compare the crops unflipped
        plain = tf.image.resize(whole, [cfg.crop, cfg.crop], method="bilinear").numpy()
        small = image_ops.decode_window_scaled(jpeg, window, cfg.crop)
        mini = tf.image.resize(small, [cfg.crop, cfg.crop], method="bilinear").numpy()
        if int(image_ops.dct_ratio(window, cfg.crop)) > 0:  # only where the paths differ
            reduced += 1
            full.append(psnr(plain, ref))
            scaled.append(psnr(mini, ref))
    return {
        "images": len(jpegs),
        "full_scale_psnr_db": round(float(np.median(full)), 2) if full else None,
        "reduced_scale_psnr_db": round(float(np.median(scaled)), 2) if scaled else None,
        "reduced_share": round(reduced / len(jpegs), 3),
    }


def run(cfg: BenchConfig) -> SuiteResult:
    files = photos(cfg)
    variants = [
        (FULL, lambda: tf_pipeline(cfg, files, scaled=False)),
        (SCALED, lambda: tf_pipeline(cfg, files, scaled=True)),
        (DALI, lambda: dali_pipeline(cfg, files)),
        (FULL + AA, lambda: tf_pipeline(cfg, files, scaled=False)),
    ]
    entries = [lambda make=make: ((lambda: iter(make())), lambda b: int(b[0].shape[0])) for _, make in variants]
    count = 32 if cfg.quick else PHOTOS
    window = max(2, cfg.window_batches // 2)
    measured = rates.one_by_one(entries, cfg, warm_examples=count, window=window)
    by = {name: m for (name, _), m in zip(variants, measured, strict=True)}
    noise = rates.spread(by[FULL].median, by[FULL + AA].median)
    quality = fidelity(cfg, files)
    rows = [
        row(
            "decode 1024x768",
            name,
            by[name],
            unit="images/s",
            vs_dali=rates.ratio(by[name].median, by[DALI].median),
            vs_full_scale=rates.ratio(by[name].median, by[FULL].median),
        )
        for name, _ in variants
    ]
    targets = [
        Target(
            "reduced-scale window decode at least 1.3x DALI CPU (1024x768 photos, 224 output)",
            1.3,
            rates.ratio(by[SCALED].median, by[DALI].median),
            detail="images/s, all cores, same passes",
            noise=noise,
            source="issue 14",
        )
    ]
    notes = (
        f"{count} JPEGs of {WIDTH}x{HEIGHT} (quality 90) in {SHARDS} TFRecord shards; output {cfg.crop}x{cfg.crop}",
        f"{100 * quality['reduced_share']:.0f}% of {quality['images']} windows were large enough to decode at "
        f"reduced scale; on those, PSNR against the window decoded at full scale and resized with antialiasing "
        f"(median): full-scale decode {quality['full_scale_psnr_db']} dB, "
        f"reduced-scale {quality['reduced_scale_psnr_db']} dB",
    )
    return SuiteResult("decode", tuple(rows), tuple(targets), notes, {"decode 1024x768": noise})
