"""Object storage: ``shapes`` read from a local S3 server beside the same shards on local disk.

ONE HOST: the server (``moto_server`` on 127.0.0.1, ``stoker.local_s3``) runs on this machine and
shares its cores with the pipeline; it serves each GET from memory over loopback. So the ratio
measures the overhead of stoker's ``s3://`` path (tensorflow-io's S3 client, HTTP, the server's
own CPU), not a real bucket's bandwidth or latency over a network, which are worse per request and
call for more reads in flight (``pipeline.read_parallelism``).

Two groups, each with the same passes and warm-up for every row: local disk, ``s3://`` on the
local server, local disk again (A/A).

- ``object storage: records``: the split's shards through a parallel interleave of
  ``TFRecordDataset`` and batch, nothing else: the read path alone, where an overhead shows most.
- ``object storage: pipeline``: ``ingest.pipeline.build`` with the ``optimized`` preset minus the
  cache (a cache would read the bucket once, then measure memory) on ``shapes`` at 256 px: decode
  and augment included, as training reads it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import tensorflow as tf

from benchmarks import data, rates
from benchmarks.ablation import AA, pipeline_entry
from benchmarks.config import BenchConfig
from benchmarks.runner import SuiteResult, row
from ingest.datasets.shapes import Shapes
from ingest.options import AUTOTUNE, PipelineOptions

LOCAL, S3 = "local disk", "s3:// (local moto server, same host)"
GROUPS = ("object storage: records", "object storage: pipeline")
NOTE = (
    "one host: the S3 server runs on this machine, beside the pipeline, and serves from memory over "
    "loopback; the ratio is the overhead of the s3:// path here, not a network bucket's speed"
)


def _upload(s3, root: Path, prefix: str) -> None:
    """The prepared folder's files (shards and dataset_info.json) as objects under ``prefix``."""
    client = s3.client()
    for path in sorted(root.iterdir()):
        if path.is_file():
            client.upload_file(str(path), s3.bucket, f"{prefix}/{root.name}/{path.name}")


def records_entry(dataset: Shapes, cfg: BenchConfig) -> rates.Entry:
    """Batches of serialized records of the train split, read by a parallel interleave (repeated)."""
    files = tf.data.Dataset.from_tensor_slices(dataset.files("train"))
    ds = files.interleave(tf.data.TFRecordDataset, num_parallel_calls=AUTOTUNE, deterministic=True)
    return rates.entry(ds.repeat().batch(cfg.batch).prefetch(AUTOTUNE))


def run(cfg: BenchConfig) -> SuiteResult:
    from stoker.local_s3 import LocalS3

    disk = data.shapes(cfg)
    options = PipelineOptions(preset="optimized", cache=False)
    makers = (lambda d: records_entry(d, cfg), lambda d: pipeline_entry(d, options, cfg))
    rows, noise = [], {}
    with LocalS3("stoker-bench") as s3:
        os.environ.update(s3.env())  # this process reads s3:// (the runner ends it with storage.exit_process)
        _upload(s3, Path(str(disk.root)), "bench")
        remote = Shapes(dataclasses.replace(disk.options, data_dir=s3.url("bench")))
        variants = ((LOCAL, disk), (S3, remote), (LOCAL + AA, disk))
        for group, make in zip(GROUPS, makers, strict=True):
            entries = [lambda d=d, make=make: make(d) for _, d in variants]
            measured = rates.one_by_one(entries, cfg, warm_examples=cfg.image_examples)
            by = {name: m for (name, _), m in zip(variants, measured, strict=True)}
            noise[group] = rates.spread(by[LOCAL].median, by[LOCAL + AA].median)
            rows += [
                row(
                    group,
                    name,
                    by[name],
                    unit="examples/s",
                    vs_local_disk=rates.ratio(by[name].median, by[LOCAL].median),
                )
                for name, _ in variants
            ]
    return SuiteResult("objectstore", tuple(rows), (), (NOTE,), noise)
