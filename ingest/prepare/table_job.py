"""The Beam job that prepares a table (``DATASET=table SOURCE=... LABEL=...``) into Parquet shards.

Host first (cheap, before any worker starts): every file has a header (CSV) or a schema
(Parquet), the same columns in every file, and LABEL is one of them. Then one Beam job:

    files -> chunks of rows -> column types (resolved over files)
                            -> summary of the train split (moments, value counts, labels)
                            -> plan (means, stds, vocabularies, label ids)
                            -> rows transformed by the plan -> shards -> dataset_info.json

Chunk ``k`` of file ``i`` goes to shard ``(i + k) % shards`` of its split; each shard is
written whole by one worker, its rows in (file, chunk) order, so its contents do not depend on
the runner. Like ``ingest.prepare.beam_job``, the job writes into ``<root>.partial`` and renames
it at the end: an error (a bad row, a type change, one class) leaves the old folder as it was
and nothing half-written. A :class:`~stoker.errors.DataError` raised in a worker is written to
``<root>.partial/error.txt`` first, so the host re-raises its one-line message whatever the
runner wraps it in.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apache_beam as beam

from ingest.dataset import INFO_FILE, file_crc32c
from ingest.options import DataOptions
from ingest.prepare import beam_job, table_rows, table_stats
from ingest.sources import parquet
from stoker import cli, files, processes
from stoker.errors import DataError

log = logging.getLogger(__name__)
ERROR_FILE = "error.txt"


# ---- host checks ----------------------------------------------------------------------------
def columns_of(path: str) -> list[str]:
    """The column names of one source file (CSV header or Parquet schema)."""
    if path.endswith(".parquet"):
        return list(table_rows.parquet_kinds(path))
    header = table_rows.csv_header(path)
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise DataError(f"{path}: column(s) {duplicated} appear more than once in the header; give each a unique name")
    return header


def check_columns(paths: list[str], label: str) -> list[str]:
    """The columns every file has; raises naming the file whose columns differ, or a LABEL that is
    not given or not a column (with the closest names)."""
    first = columns_of(paths[0])
    for path in paths[1:]:
        cols = columns_of(path)
        if set(cols) != set(first):
            raise DataError(
                f"{path} has other columns than {paths[0]}: missing {sorted(set(first) - set(cols))}, "
                f"extra {sorted(set(cols) - set(first))}; give every file the same columns"
            )
    if not label:
        raise DataError(f"DATASET=table needs LABEL=<the column to predict>; {paths[0]} has columns {', '.join(first)}")
    if label not in first:
        close = difflib.get_close_matches(label, first, n=3, cutoff=0.3)
        hint = f"closest: {', '.join(close)}" if close else f"columns: {', '.join(first)}"
        raise DataError(f"LABEL={label!r} is not a column of {paths[0]} ({hint}); give LABEL=<one of its columns>")
    return first


# ---- the job's steps (each a plain function; a DataError in one is written down first) -------
def _reporting(out_dir: str, fn: Callable) -> Callable:
    """``fn`` that writes a DataError's message to ``<out_dir>/error.txt`` before raising it."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DataError as err:
            files.atomic_write(Path(out_dir) / ERROR_FILE, str(err))
            raise

    return wrapped


def _read(item: tuple[int, str], skip_bad: bool):
    index, path = item
    if path.endswith(".parquet"):
        yield from table_rows.read_parquet(index, path)
    else:
        yield from table_rows.read_csv(index, path, skip_bad=skip_bad)


def _keyed(chunk: table_rows.Chunk, p: dict, shards: int, fraction: float, seed: int):
    for split, (columns, unseen) in table_stats.transform(chunk, p, fraction, seed).items():
        yield (split, (chunk.index + chunk.part) % shards), (chunk.index, chunk.part, columns, unseen)


class _WriteShard(beam.DoFn):
    """Writes one shard of a split (its chunks in file and chunk order); emits its metadata."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def process(self, keyed):
        import numpy as np

        (split, shard), parts = keyed
        parts = sorted(parts, key=lambda x: (x[0], x[1]))
        unseen = sum(x[3] for x in parts)
        columns = {k: np.concatenate([x[2][k] for x in parts]) for k in parts[0][2]}
        rows = len(columns["id"])
        meta = {"split": split, "unseen_label": unseen, "num_examples": rows}
        if rows:
            name = f"{split}-{shard:05d}.parquet"
            path = Path(self.out_dir) / name
            parquet.write(str(path), columns)
            meta.update(file=name, bytes=path.stat().st_size, crc32c=file_crc32c(path))
        yield meta


def _write_info(metas: list[dict], p: dict, summary: dict, kinds: dict, out_dir: str, base: dict) -> None:
    """dataset_info.json: columns, statistics, vocabularies, missing counts, counts per split and shard."""
    splits: dict[str, Any] = {}
    unseen = 0
    for meta in sorted(metas, key=lambda m: m.get("file", "")):
        unseen += meta["unseen_label"]
        split = splits.setdefault(meta["split"], {"num_examples": 0, "shards": []})
        if meta["num_examples"]:
            split["num_examples"] += meta["num_examples"]
            split["shards"].append({k: meta[k] for k in ("file", "num_examples", "bytes", "crc32c")})
    lay = table_stats.layout(p)
    info = dict(
        base,
        label=p["label"],
        label_kind=p["label_kind"],
        label_names=p["label_names"],
        columns=_columns(p, summary, kinds),
        features={"numeric": dict(lay["numeric"]), "categorical": {c: [n, w] for c, n, w in lay["categorical"]}},
        feature_width=len(lay["numeric"]) + sum(w for _, _, w in lay["categorical"]),
        dropped_rows={
            "missing_label": dict(summary["no_label"]),
            "unseen_label_in_validation": unseen,
        },
        bad_rows={"count": summary["bad_count"], "listed": summary["bad"]},
        splits=splits,
    )
    files.atomic_write(Path(out_dir) / INFO_FILE, json.dumps(info, indent=2))


def _columns(p: dict, summary: dict, kinds: dict) -> dict[str, Any]:
    """Per source column: its type, what it became, its statistics and missing values per split."""
    out: dict[str, Any] = {}
    for name, kind in kinds.items():
        missing = {s: summary["missing"][s].get(name, 0) for s in table_stats.SPLITS}
        out[name] = {"type": kind, "role": "dropped (no value in the train split)", "missing": missing}
    out[p["label"]]["role"] = "label"
    for col in p["numeric"]:
        out[col["name"]].update(role="numeric", mean=col["mean"], std=col["std"], missing_indicator=col["indicator"])
    for col in p["categorical"]:
        distinct = len(summary["counts"][col["name"]])
        out[col["name"]].update(role="categorical", distinct_in_train=distinct, vocab=col["vocab"])
    return out


# ---- the job --------------------------------------------------------------------------------
def run(
    root: Path,
    paths: list[str],
    *,
    options: DataOptions,
    info: dict[str, Any],
    runner: str = "DirectRunner",
    beam_args: list[str] | None = None,
) -> dict[str, Any]:
    """Prepare ``paths`` (sorted SOURCE files) into ``root``; returns dataset_info."""
    label = options.label
    check_columns(paths, label)
    pq_kinds = {p: table_rows.parquet_kinds(p) for p in paths if p.endswith(".parquet")}
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    beam_log = root.with_name(root.name + ".prepare.log")
    beam_log.unlink(missing_ok=True)
    o, out = options, str(partial)
    step = functools.partial(_reporting, out)
    beam_opts = beam_job._beam_options(runner, beam_args or [], os.cpu_count() or 1)
    processes.guard()  # Beam's worker processes carry this run's mark: the watchdog ends them with it
    start = time.perf_counter()
    try:
        with cli.stderr_to(beam_log), beam.Pipeline(options=beam_opts) as pipe:
            chunks = (
                pipe
                | "files" >> beam.Create(list(enumerate(paths)))
                | "read" >> beam.FlatMap(step(_read), o.skip_bad_files)
            )
            kinds = beam.pvalue.AsSingleton(
                chunks
                | "kinds" >> beam.Map(lambda c: (c.path, table_rows.kinds(c, pq_kinds.get(c.path))))
                | "all kinds" >> beam.combiners.ToList()
                | "resolve" >> beam.Map(step(table_rows.resolve_kinds))
            )
            summary = (
                chunks
                | "summarize" >> beam.Map(step(table_stats.summarize), kinds, label, o.validation_fraction, o.seed)
                | "merge" >> beam.CombineGlobally(table_stats.merge)
            )
            plan = summary | "plan" >> beam.Map(step(table_stats.plan), kinds, label, o.vocab_size)
            metas = (
                chunks
                | "transform"
                >> beam.FlatMap(_keyed, beam.pvalue.AsSingleton(plan), o.shards or 4, o.validation_fraction, o.seed)
                | "by shard" >> beam.GroupByKey()
                | "write" >> beam.ParDo(_WriteShard(out))
            )
            _ = (
                metas
                | "collect" >> beam.combiners.ToList()
                | "info"
                >> beam.Map(
                    _write_info,
                    beam.pvalue.AsSingleton(plan),
                    beam.pvalue.AsSingleton(summary),
                    kinds,
                    out,
                    info,
                )
            )
    except Exception as err:
        _raise_clearly(err, partial, beam_log)
    result = json.loads((partial / INFO_FILE).read_text())
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    _log_result(root, result, time.perf_counter() - start)
    return result


def _raise_clearly(err: Exception, partial: Path, beam_log: Path) -> None:
    """Re-raise a worker's DataError as its one-line message (else the Beam error); remove the partial folder."""
    message = (partial / ERROR_FILE).read_text() if (partial / ERROR_FILE).is_file() else ""
    shutil.rmtree(partial, ignore_errors=True)
    if message:
        raise DataError(message) from None
    if isinstance(err, DataError):  # raised in this process (in_memory runner): already clear
        raise DataError(str(err).split(" [while running")[0]) from None
    if beam_log.is_file():
        tail = beam_log.read_text(errors="replace").splitlines()[-15:]
        log.error("the Beam job failed; its output is in %s, ending:\n  %s", beam_log, "\n  ".join(tail))
    raise err


def _log_result(root: Path, info: dict[str, Any], seconds: float) -> None:
    bad = info["bad_rows"]["count"]
    if bad:
        log.warning(
            "skipped %d bad row(s) (data.skip_bad_files=true), listed in %s: %s%s",
            bad,
            root / INFO_FILE,
            ", ".join(info["bad_rows"]["listed"][:3]),
            " ..." if bad > 3 else "",
        )
    dropped = info["dropped_rows"]
    if sum(dropped["missing_label"].values()) or dropped["unseen_label_in_validation"]:
        log.warning("%s: rows dropped (counted in %s): %s", root, INFO_FILE, dropped)
    if not info["splits"].get("validation", {}).get("num_examples"):
        log.warning("%s has no validation rows: raise data.validation_fraction or add rows", root)
    log.info(
        "prepared %s in %.1f s: %s",
        root,
        seconds,
        ", ".join(f"{s} {v['num_examples']}" for s, v in info["splits"].items()),
    )
