"""One Apache Beam job that turns generated or raw examples into sharded TFRecords.

Prefix offline (this job), suffix online (``ingest.pipeline``). Example ``i`` of a split goes
to shard ``i % shards``; each shard is written whole by one worker under a temporary name
and renamed, so the job knows each shard's record count and byte size. Those, per-channel
statistics and the dataset's own metadata go into ``dataset_info.json``, written last. The
job writes into ``<root>.partial`` and renames it to ``<root>`` at the end: an interrupted
job leaves nothing a later run would trust, and the next prepare starts over.

On object storage (``DATA_DIR=s3://...`` or ``gs://...``) a folder rename is a copy of every
object, not atomic. There the job deletes ``dataset_info.json`` first, then the old objects,
writes each shard under its final name (an object appears whole when its upload completes) and
writes ``dataset_info.json`` last, after every shard is complete; readers trust only the shards
it lists (``Dataset.files``), so an interrupted job is never read as complete. Beam's own log
then goes to a local temporary folder.

Runs on DirectRunner (``multi_processing``, one worker per core) by default; ``--runner``
and any other Beam flag pass straight through, so the same job runs on Flink, Spark or
Dataflow (with ``data_dir`` on storage every worker can reach).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from ingest.sources import tfrecord
from stoker import cli, files, processes, storage

log = logging.getLogger(__name__)
# make_example(split, index) -> (serialized record, per-channel pixel sums [3, 3] or None)
MakeExample = Callable[[str, int], tuple[bytes, Any]]


def shard_name(split: str, shard: int, shards: int, compression: str) -> str:
    """``train-00003-of-00008.tfrecord`` (``.gz`` added for GZIP)."""
    return f"{split}-{shard:05d}-of-{shards:05d}.tfrecord" + (".gz" if compression == "GZIP" else "")


class _WriteShard(beam.DoFn):
    """Writes one shard (all its examples, in index order); emits its metadata."""

    def __init__(self, out_dir: str, shards: int, compression: str) -> None:
        self.out_dir, self.shards, self.compression = out_dir, shards, compression

    def process(self, keyed):
        (split, shard), items = keyed
        items = sorted(items)  # by example index: shard contents do not depend on the runner
        name = shard_name(split, shard, self.shards, self.compression)
        count, size = tfrecord.write(_join(self.out_dir, name), (rec for _, rec, _ in items), self.compression)
        stats = sum((s for _, _, s in items if s is not None), np.zeros((3, 3)))
        yield {"split": split, "file": name, "num_examples": count, "bytes": size, "stats": stats.tolist()}


def _beam_options(runner: str, beam_args: list[str], workers: int) -> PipelineOptions:
    args = [f"--runner={runner}", *beam_args]
    if runner == "DirectRunner":
        if not any(a.startswith("--direct_running_mode") for a in beam_args):
            args.append("--direct_running_mode=multi_processing")
        if not any(a.startswith("--direct_num_workers") for a in beam_args):
            args.append(f"--direct_num_workers={workers}")
    return PipelineOptions(args)


def _join(folder: str, name: str) -> str | Path:
    return f"{folder.rstrip('/')}/{name}" if storage.is_url(folder) else Path(folder) / name


def _progress(out_dir: Path | storage.Url, total: int, done: threading.Event) -> None:
    """Show shards finished while the job runs (polls the output folder; a bucket every 2 s)."""
    from tqdm import tqdm

    poll_s = 2.0 if isinstance(out_dir, storage.Url) else 0.5
    with tqdm(
        total=total, desc="prepare: shards written", unit="shard", file=sys.stdout
    ) as bar:  # fd 2 is the job's log
        while not done.wait(poll_s):
            n = len([p for p in out_dir.glob("*.tfrecord*")]) if out_dir.is_dir() else 0
            bar.update(n - bar.n)
        n = len(list(out_dir.glob("*.tfrecord*"))) if out_dir.is_dir() else 0
        bar.update(n - bar.n)


def run(
    root: str | Path,
    make_example: MakeExample,
    *,
    splits: dict[str, int],
    shards: int,
    compression: str,
    info: dict[str, Any],
    runner: str = "DirectRunner",
    beam_args: list[str] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Generate ``splits`` (name -> example count) into ``root``; returns dataset_info."""
    root = storage.location(root)
    if isinstance(root, storage.Url):
        partial = root  # no atomic rename: dataset_info.json, written last, is the commit
        (root / "dataset_info.json").unlink(missing_ok=True)  # first: the old shards stop being trusted
        root.rmtree()
        beam_log = Path(tempfile.gettempdir()) / (re.sub(r"[^\w.-]+", "_", str(root)) + ".prepare.log")
    else:
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # a previous interrupted job: start over
        beam_log = root.with_name(root.name + ".prepare.log")  # Beam's and its workers' own output
    partial.mkdir(parents=True)
    workers = workers or os.cpu_count() or 1
    options = _beam_options(runner, beam_args or [], workers)
    processes.guard()  # Beam's worker processes carry this run's mark: the watchdog ends them with it
    done = threading.Event()
    bar = threading.Thread(target=_progress, args=(partial, shards * len(splits), done), daemon=True)
    bar.start()
    start = time.perf_counter()
    beam_log.unlink(missing_ok=True)
    try:
        with cli.stderr_to(beam_log), beam.Pipeline(options=options) as p:
            parts = []
            for split, count in splits.items():
                parts.append(
                    p
                    | f"{split}: indices" >> beam.Create(range(count))
                    | f"{split}: make" >> beam.Map(lambda i, s=split: ((s, i % shards), (i, *make_example(s, i))))
                )
            metas = (
                parts
                | "all splits" >> beam.Flatten()
                | "by shard" >> beam.GroupByKey()
                | "write" >> beam.ParDo(_WriteShard(str(partial), shards, compression))
            )
            _ = (
                metas
                | "collect" >> beam.combiners.ToList()
                | "info" >> beam.Map(_write_info, str(partial), dict(info, compression=compression))
            )
    except Exception:
        if beam_log.is_file():
            tail = beam_log.read_text(errors="replace").splitlines()[-15:]
            log.error("the Beam job failed; its output is in %s, ending:\n  %s", beam_log, "\n  ".join(tail))
        raise
    finally:
        done.set()
        bar.join()
    result = json.loads((partial / "dataset_info.json").read_text())
    if partial != root:
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
    log.info(
        "prepared %s in %.1f s: %s",
        root,
        time.perf_counter() - start,
        ", ".join(f"{s} {v['num_examples']}" for s, v in result["splits"].items()),
    )
    return result


def _write_info(metas: list[dict[str, Any]], out_dir: str, info: dict[str, Any]) -> None:
    """dataset_info.json: counts per split and shard, bytes per shard, channel mean and std."""
    splits: dict[str, Any] = {}
    total = np.zeros((3, 3))
    for meta in sorted(metas, key=lambda m: m["file"]):
        split = splits.setdefault(meta["split"], {"num_examples": 0, "shards": []})
        split["num_examples"] += meta["num_examples"]
        split["shards"].append({k: meta[k] for k in ("file", "num_examples", "bytes")})
        if meta["split"] == "train":
            total += np.asarray(meta["stats"])
    if total[2].min() > 0:  # rows: sum, sum of squares, pixel count; per channel
        mean = total[0] / total[2]
        std = np.sqrt(np.maximum(total[1] / total[2] - mean**2, 0.0))
        info = dict(info, mean=mean.round(4).tolist(), std=std.round(4).tolist())
    out = dict(info, splits=splits)
    files.atomic_write(_join(out_dir, "dataset_info.json"), json.dumps(out, indent=2))
