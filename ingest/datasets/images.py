"""``DATASET=images SOURCE=<folder>``: a folder of images, one subfolder per class, with no code.

``make prepare`` (or the first ``make train``) runs the Beam job of ``ingest.prepare.beam_job``
over the files :mod:`ingest.prepare.image_folder` lists: each file is decoded once to check it,
non-JPEG files are re-encoded as JPEG, and the shards go to ``<data_dir>/<name>/`` with a
``dataset_info.json`` (class names, counts per split, class and shard, channel mean and std, the
files skipped). From then on ``DATASET=<name>`` reads it like a built-in.

Images keep their own sizes in the shards, so a batch of them cannot be decoded into one tensor:
the batched :meth:`ImageFolder.parse` keeps the JPEG bytes (a cache then holds compressed bytes),
and each example is decoded per example, from the window it needs — training's random resized
crop and flip in :meth:`ImageFolder.augment`, evaluation's center crop in
:meth:`ImageFolder.preprocess` — into ``[image_size, image_size, 3]`` (``ingest.image_ops``).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, ClassVar

import tensorflow as tf

from ingest import image_ops
from ingest.datasets import sourced
from ingest.prepare import beam_job, image_folder
from stoker.errors import DataError

log = logging.getLogger(__name__)
FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "id": tf.io.FixedLenFeature([], tf.int64),
}
_LISTED = 10  # bad files named in an error message (all of them are in the job's output)
# DirectRunner's worker processes take 5-20 s to start on a small machine, longer than one
# process takes to check and encode this many small images: below it, the job runs in-process.
SMALL_JOB = 2000
graph_fn = image_ops.graph_fn


@sourced.register_kind
class ImageFolder(sourced.FromSource):
    """Your own images: SOURCE/<class>/<image> (JPEG, PNG, BMP, GIF), prepared into TFRecords."""

    kind = "images"
    name = "images"
    validates = True
    validation_ignore = ("id", "image", "file")  # JPEG bytes, example ids and source paths: no domain, no drift
    has_augment = True
    default_model = "shapes_cnn"
    sizes_vary: ClassVar[bool] = True  # shards keep each image's own size: decode per example (DALI too)
    decodes_every_epoch: ClassVar[bool] = True  # the cache holds JPEG bytes, decoded again every epoch
    _source_hint = "folder with one subfolder per class"

    # ---- what it is ----------------------------------------------------------------------
    def source_files(self) -> list[str]:
        """Every file of the image folder's layout (its fingerprint tells when to prepare again)."""
        return image_folder.source_files(self.required_source())

    @property
    def size(self) -> int:
        """Side of the images the pipeline yields (``data.image_size``; the shards keep their own)."""
        return self.options.image_size

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        """One example as the model gets it: the image decoded to ``[image_size, image_size, 3]``.

        Parse yields the same keys with ``image`` still JPEG bytes (scalar string): its size is
        known only once augment or preprocess has decoded it (see the module docstring)."""
        return {
            "image": tf.TensorSpec([self.size, self.size, 3], tf.float32),
            "label": tf.TensorSpec([], tf.int64),
            "id": tf.TensorSpec([], tf.int64),
        }

    @property
    def num_classes(self) -> int:
        names = self.info.get("label_names")
        if not names:
            raise DataError(f"{self.root} is not prepared: run `make prepare DATASET={self.kind} SOURCE=...`")
        return len(names)

    def example_bytes(self) -> int:
        """Mean bytes of one stored record (a cache holds JPEG bytes, not pixels)."""
        shards = self.info.get("splits", {}).get("train", {}).get("shards", [])
        records = sum(s["num_examples"] for s in shards)
        return sum(s["bytes"] for s in shards) // records if records else 64 * 1024

    def mismatch(self) -> str:
        """``max_side`` asked (non-zero) but the folder was prepared with another ('' when they agree)."""
        have, asked = self.info.get("max_side"), self.options.max_side
        return f"max_side {have} (asked {asked})" if asked and have is not None and have != asked else ""

    # ---- how to read it ------------------------------------------------------------------
    @graph_fn
    def parse(self, records: tf.Tensor) -> dict[str, tf.Tensor]:
        """Parse a batch of Examples; each JPEG stays encoded (decoded per example, at its own size)."""
        return tf.io.parse_example(records, FEATURES)

    serves_image_bytes = True

    @graph_fn
    def from_image_bytes(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Serving: JPEG bytes stay encoded, as :meth:`parse` leaves them (preprocess crops and decodes)."""
        return {"image": images}

    @graph_fn
    def parse_labels(self, records: tf.Tensor) -> tf.Tensor:
        return tf.io.parse_example(records, {"label": FEATURES["label"]})["label"]

    @graph_fn
    def augment(self, example: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Training: random resized crop decoded from its window alone (at reduced DCT scale with
        ``data.scaled_decode``), random flip (float 0..255)."""
        image = image_ops.random_resized_crop(
            example["image"], seed, crop=self.size, fused=True, scaled=self.options.scaled_decode
        )
        return dict(example, image=image)

    @graph_fn
    def preprocess(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Evaluation's center crop where augment did not decode (still bytes), then normalize."""
        image = example["image"]
        if image.dtype == tf.string:  # static: evaluation (training's augment decoded it already)
            image = image_ops.center_crop(image, crop=self.size)
        mean = tf.constant(self.info.get("mean", [0.5] * 3), tf.float32)
        std = tf.constant(self.info.get("std", [0.25] * 3), tf.float32)
        return dict(example, image=image_ops.normalize(image, mean, std))

    # ---- how to make it ------------------------------------------------------------------
    def prepare(self, runner: str = "DirectRunner", beam_args: list[str] | None = None) -> dict[str, Any]:
        """List SOURCE, then the Beam job: check, re-encode, shard into ``<data_dir>/<name>/``."""
        o = self.options
        source = os.path.abspath(self.source)
        files = image_folder.source_files(source)  # raises the bad-layout errors before any work
        found = image_folder.listing(source, validation_fraction=o.validation_fraction, seed=o.seed)
        total = sum(len(items) for items in found.splits.values())
        info = {
            "name": self.name,
            "kind": self.kind,
            "source": source,
            "source_fingerprint": sourced.fingerprint(files),
            "layout": found.layout,
            "label_names": list(found.label_names),
            "max_side": o.max_side,
            "seed": o.seed,
            "validation_fraction": o.validation_fraction if found.layout == "classes" else None,
            "features": {"image": "jpeg bytes", "label": "int64", "id": "int64", "file": "path relative to source"},
        }
        log.info("%s: %d images of %d classes; preparing %s", source, total, len(found.label_names), self.root)
        make = functools.partial(image_folder.make_example, source=source, items=found.splits, max_side=o.max_side)
        return beam_job.run(
            self.root,
            make,
            splits={split: len(items) for split, items in found.splits.items()},
            shards=o.shards or max(4, -(-total // 4096)),  # >= 4 files: a few input pipelines shard by file
            compression=o.compression,
            info=info,
            runner=runner,
            beam_args=_in_process_if_small(runner, beam_args or [], total),
            finish=functools.partial(self._finish, found),
        )

    def _finish(self, found: image_folder.Listing, info: dict[str, Any]) -> dict[str, Any]:
        """The job's info checked for unreadable files (an error unless skipped) and given class counts."""
        bad = info.get(beam_job.SKIPPED, [])
        if bad and not self.options.skip_bad_files:
            named = ", ".join(f"{b['file']} ({b['reason']})" for b in bad[:_LISTED])
            more = f" and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
            raise DataError(
                f"{len(bad)} files under SOURCE={info['source']} are not readable images: {named}{more}; "
                f"fix or remove them, or skip them with SET=data.skip_bad_files=true (they are then listed in "
                f"{self.root}/dataset_info.json)"
            )
        counts = found.counts()
        labels = {file: label for items in found.splits.values() for file, label in items}
        for b in bad:
            counts[b["split"]][labels[b["file"]]] -= 1
        empty = [found.label_names[c] for c, n in enumerate(counts["train"]) if n == 0]
        if empty:
            raise DataError(
                f"class {', '.join(empty)} of SOURCE={info['source']} has no readable training image once the "
                f"unreadable files are skipped; add images to it, or remove its folder"
            )
        if bad:
            log.warning(
                "skipped %d unreadable files (data.skip_bad_files=true), listed in %s/dataset_info.json: %s",
                len(bad),
                self.root,
                ", ".join(b["file"] for b in bad[:_LISTED]) + (" ..." if len(bad) > _LISTED else ""),
            )
        return dict(info, skipped=bad, num_skipped=len(bad), label_counts=counts)


def _in_process_if_small(runner: str, beam_args: list[str], images: int) -> list[str]:
    """``beam_args``, with DirectRunner's in-process mode for a job under :data:`SMALL_JOB` images
    (unless the caller chose a running mode or worker count)."""
    if runner != "DirectRunner" or images >= SMALL_JOB or any(a.startswith("--direct_") for a in beam_args):
        return beam_args
    return [*beam_args, "--direct_running_mode=in_memory", "--direct_num_workers=1"]
