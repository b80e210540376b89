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

An example that cannot be made (a user's file that does not decode) raises :class:`BadExample`
in ``make_example``: the job goes on, and every such example is listed under ``skipped`` in
``dataset_info.json``. ``finish`` sees that info before the folder is renamed into place: a
caller that refuses skipped examples raises there (and nothing half-written is left), or returns
the info with what it adds (e.g. examples per class).

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
from stoker.errors import StokerError

log = logging.getLogger(__name__)
# DirectRunner's multi-processing mode was seen here (Beam 2.61, a loaded 2-core host) to drop part
# of one bundle's output silently: 496 of 8,000 examples, every one from one bundle's odd shards.
# The job's own counts catch that: a job whose shards hold fewer examples than it made runs again.
ATTEMPTS = 2
# make_example(split, index) -> (serialized record, per-channel pixel sums [3, 3] or None)
MakeExample = Callable[[str, int], tuple[bytes, Any]]
SKIPPED = "skipped"  # tagged output of the make step, and the dataset_info.json key listing it


class BadExample(Exception):  # noqa: N818 - a signal from make_example, not a failure of the job
    """Raised by ``make_example``: this example is left out, listed under ``skipped`` with ``reason``."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(f"{item}: {reason}")
        self.item, self.reason = item, reason


class _Make(beam.DoFn):
    """Makes example ``index`` of ``split``, keyed by its shard; a :class:`BadExample` goes to ``skipped``."""

    def __init__(self, split: str, shards: int, make_example: MakeExample) -> None:
        self.split, self.shards, self.make_example = split, shards, make_example

    def process(self, index: int):
        try:
            record, stats = self.make_example(self.split, index)
        except BadExample as bad:
            yield beam.pvalue.TaggedOutput(SKIPPED, {"split": self.split, "file": bad.item, "reason": bad.reason})
            return
        yield (self.split, index % self.shards), (index, record, stats)


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
    finish: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Generate ``splits`` (name -> example count) into ``root``; returns dataset_info.

    ``finish(info)`` runs after the job, before the folder is renamed into place: when it raises,
    the partial folder is removed and the error propagates (nothing half-written stays); when it
    returns a dict, that is written as ``dataset_info.json`` instead.
    """
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
    workers = workers or os.cpu_count() or 1
    options = _beam_options(runner, beam_args or [], workers)
    processes.guard()  # Beam's worker processes carry this run's mark: the watchdog ends them with it
    start = time.perf_counter()
    for attempt in range(1, ATTEMPTS + 1):
        partial.mkdir(parents=True)
        _job(partial, beam_log, options, make_example, splits, shards, compression, info)
        result = json.loads((partial / "dataset_info.json").read_text())
        lost = missing(result, splits)
        if not lost:
            break
        _remove(partial)
        what = "; ".join(f"{split}: {n} of {splits[split]}" for split, n in lost.items())
        if attempt == ATTEMPTS:
            raise StokerError(
                f"the Beam job wrote fewer examples than it made ({what} missing) {ATTEMPTS} times in a row; "
                f"nothing was kept. Its log is {beam_log}; run the prepare again (another RUNNER= or "
                f"BEAM_ARGS=--direct_running_mode=in_memory if it repeats)"
            )
        log.warning("the Beam job lost examples (%s missing): its output is discarded and the job runs again", what)
    if finish is not None:
        try:
            amended = finish(result)
        except Exception:
            _remove(partial)
            raise
        if amended is not None:
            result = amended
            files.atomic_write(_join(str(partial), "dataset_info.json"), json.dumps(result, indent=2))
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


def _job(
    partial: Path | storage.Url,
    beam_log: Path,
    options: PipelineOptions,
    make_example: MakeExample,
    splits: dict[str, int],
    shards: int,
    compression: str,
    info: dict[str, Any],
) -> None:
    """The Beam job itself: make, group by shard, write, then ``dataset_info.json`` into ``partial``."""
    done = threading.Event()
    bar = threading.Thread(target=_progress, args=(partial, shards * len(splits), done), daemon=True)
    bar.start()
    beam_log.unlink(missing_ok=True)
    try:
        with cli.stderr_to(beam_log), beam.Pipeline(options=options) as p:
            parts, bad = [], []
            for split, count in splits.items():
                made = (
                    p
                    | f"{split}: indices" >> beam.Create(range(count))
                    | f"{split}: make"
                    >> beam.ParDo(_Make(split, shards, make_example)).with_outputs(SKIPPED, main="made")
                )
                parts.append(made.made)
                bad.append(made[SKIPPED])
            skipped = bad | "all skipped" >> beam.Flatten()
            metas = (
                parts
                | "all splits" >> beam.Flatten()
                | "by shard" >> beam.GroupByKey()
                | "write" >> beam.ParDo(_WriteShard(str(partial), shards, compression))
            )
            _ = (
                metas
                | "collect" >> beam.combiners.ToList()
                | "info"
                >> beam.Map(
                    _write_info,
                    str(partial),
                    dict(info, compression=compression),
                    beam.pvalue.AsList(skipped),
                )
            )
    except Exception:
        if beam_log.is_file():
            tail = beam_log.read_text(errors="replace").splitlines()[-15:]
            log.error("the Beam job failed; its output is in %s, ending:\n  %s", beam_log, "\n  ".join(tail))
        raise
    finally:
        done.set()
        bar.join()


def missing(info: dict[str, Any], splits: dict[str, int]) -> dict[str, int]:
    """Examples of each split made but neither written nor listed as skipped (split -> count)."""
    skipped: dict[str, int] = {}
    for bad in info.get(SKIPPED, ()):
        skipped[bad["split"]] = skipped.get(bad["split"], 0) + 1
    written = {split: part["num_examples"] for split, part in info.get("splits", {}).items()}
    lost = {split: count - written.get(split, 0) - skipped.get(split, 0) for split, count in splits.items()}
    return {split: n for split, n in lost.items() if n}


def _remove(folder: Path | storage.Url) -> None:
    """Delete a job's output (its info file first on object storage: the shards stop being trusted)."""
    if isinstance(folder, storage.Url):
        (folder / "dataset_info.json").unlink(missing_ok=True)
        folder.rmtree()
    else:
        shutil.rmtree(folder, ignore_errors=True)


def _write_info(
    metas: list[dict[str, Any]], out_dir: str, info: dict[str, Any], skipped: list[dict[str, str]] = ()
) -> None:
    """dataset_info.json: counts per split and shard, bytes per shard, channel mean and std, and
    the examples left out (``skipped``, only when there are any)."""
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
    if skipped:
        out[SKIPPED] = sorted(skipped, key=lambda b: (b["split"], b["file"]))
    files.atomic_write(_join(out_dir, "dataset_info.json"), json.dumps(out, indent=2))
