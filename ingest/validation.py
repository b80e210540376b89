"""Where data validation happens: after every prepare, in ``make validate``, and before training.

- **Prepare** (:func:`prepare`): the dataset's own prepare, then TFDV statistics of its files and,
  the first time, an inferred ``schema.pbtxt`` (``ingest.validate``). Once written the schema is
  the dataset's contract: a re-prepare keeps it (edited or not: prepare replaces the folder, so it
  is saved and put back), and data that no longer fits it is reported rather than absorbed. Delete
  ``schema.pbtxt`` to infer a new one at the next prepare.
- **A record of what passed** (``validated.json`` in the dataset folder): every file checked and
  found clean (or the files the schema was inferred from), by path with its size, modification
  time and CRC32C; whether the train files are mixtures of the classes (only then is one file's
  label drift meaningful).
- **Before training** (:func:`before_training`, ``data.validate=error|warn|off``): the files that
  are not in the record as they are now are checked; on ``error`` an anomaly stops the run before
  step 1, naming feature, anomaly and file.
- **make validate** (:func:`validate`): the dataset's files, or new data from ``SOURCE=``
  prepared the way the dataset's kind prepares (into a temporary folder), checked against the
  schema and the train statistics.

Runs on the host (the chief, before workers start).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from ingest import validate
from ingest.dataset import Dataset, file_crc32c
from stoker import files as stoker_files
from stoker import storage
from stoker.errors import DataError

log = logging.getLogger(__name__)
RECORD = "validated.json"
_LISTED = 20  # anomalies named in an error message (make validate prints them all)


# ---- the record of validated files -----------------------------------------------------------
def stamp(path: str) -> dict[str, int]:
    """What the record keeps of a file: size, modification time and CRC32C."""
    st = os.stat(path)
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "crc32c": file_crc32c(path)}


def unchanged(path: str, kept: dict[str, int] | None) -> bool:
    """True when ``path`` is as recorded (size and time equal; else the CRC32C decides, so a copy
    with a new time but the same bytes is not checked again)."""
    if not kept or not os.path.isfile(path):
        return False
    st = os.stat(path)
    if st.st_size != kept["bytes"]:
        return False
    return st.st_mtime_ns == kept["mtime_ns"] or file_crc32c(path) == kept["crc32c"]


def read_record(root: Path) -> dict[str, Any]:
    """The dataset's ``validated.json`` ({} when there is none or it is not valid JSON)."""
    try:
        return json.loads((root / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _write_record(root: Path, record: dict[str, Any]) -> None:
    stoker_files.atomic_write(root / RECORD, json.dumps(record, indent=2, sort_keys=True))


def _local(dataset: Dataset) -> bool:
    """Validation runs on local folders (object storage: not yet; said once in the log)."""
    if isinstance(dataset.root, storage.Url):
        log.info("%s is on object storage: no TFDV statistics or validation there yet", dataset.root)
        return False
    return True


# ---- prepare ---------------------------------------------------------------------------------
def prepare(dataset: Dataset, runner: str = "DirectRunner", beam_args: list[str] | None = None) -> dict[str, Any]:
    """``dataset.prepare()``, then its statistics, statistics.html and (first time) schema.pbtxt."""
    kept_schema, kept_record = "", {}
    described = dataset.validates and _local(dataset)
    if described:
        root = Path(dataset.root)
        kept_record = read_record(root)
        if (root / validate.SCHEMA).is_file():
            kept_schema = (root / validate.SCHEMA).read_text()
    info = dataset.prepare(runner=runner, beam_args=beam_args)
    if described:
        describe(dataset, kept_schema, kept_record, runner=runner, beam_args=beam_args)
    return info


def describe(
    dataset: Dataset,
    kept_schema: str = "",
    kept_record: dict[str, Any] | None = None,
    *,
    runner: str = "DirectRunner",
    beam_args: list[str] | None = None,
) -> None:
    """Statistics of a prepared dataset into its folder; the schema kept (its text given) or inferred."""
    plan = dataset.validation_plan()
    if plan is None:
        return
    root = Path(dataset.root)
    kept_record = kept_record or {}
    if kept_schema and kept_record.get("label", plan.label) != plan.label:
        log.warning("%s: LABEL is now %s (was %s): inferring a new schema", root, plan.label, kept_record["label"])
        kept_schema, kept_record = "", {}
    schema = None
    if kept_schema:  # put back first: a failure below must not lose the user's schema or the record
        (root / validate.SCHEMA).write_text(kept_schema)
        _write_record(root, dict(kept_record, label=plan.label))
        schema = load_schema(root)
    log.info(
        "%s: TFDV statistics of %s", dataset.name, ", ".join(f"{s} ({len(f)} files)" for s, f in plan.splits.items())
    )
    by_split = validate.statistics(plan, schema=schema, runner=runner, beam_args=beam_args)
    schema = validate.write(root, by_split, schema, plan)
    if kept_schema:
        log.info(
            "%s: kept %s (delete it to infer a new one); files not yet checked against it are checked "
            "before training, or now with `make validate DATASET=%s`",
            root,
            validate.SCHEMA,
            dataset.name,
        )
        return
    mixed = validate.files_are_mixtures(by_split["train"], schema, plan.label)
    if not mixed:
        log.info(
            "%s: the train files are not mixtures of the classes (e.g. one class per file): a file's own label "
            "mix is not checked for drift, only a whole set's",
            root,
        )
    _write_record(root, {"label": plan.label, "mixed_files": mixed, "files": {p: stamp(p) for p in plan.files}})
    log.info("%s: wrote %s, %s and %s", root, validate.STATISTICS, validate.HTML, validate.SCHEMA)


def load_schema(root: Path) -> Any:
    """``root/schema.pbtxt``; an edit that is not a valid schema is an error naming the file and line."""
    from google.protobuf import text_format

    try:
        return validate._tfdv().load_schema_text(str(root / validate.SCHEMA))
    except text_format.ParseError as err:
        raise DataError(
            f"{root / validate.SCHEMA} is not a valid TFDV schema ({err}); fix the edit, or delete the file "
            f"to infer a new one at the next prepare"
        ) from None


# ---- checks ----------------------------------------------------------------------------------
def _loaded(dataset: Dataset) -> tuple[Any, Any]:
    root = Path(dataset.root)
    if not (root / validate.SCHEMA).is_file() or not (root / validate.STATISTICS).is_file():
        raise DataError(
            f"{root} has no {validate.SCHEMA} and {validate.STATISTICS} to validate against; run "
            f"`make prepare DATASET={dataset.name}` (it writes them)"
        )
    load_schema(root)  # a broken edit: the error names the file
    return validate.load(root)


def validate_files(
    dataset: Dataset, files: list[str], plan: validate.Plan, *, runner: str = "DirectRunner", beam_args=None
) -> list[validate.Anomaly]:
    """Anomalies of ``files`` (read with ``plan``) against the dataset's schema and train statistics."""
    schema, train = _loaded(dataset)
    mixed = read_record(Path(dataset.root)).get("mixed_files", True)
    return validate.check(plan, files, schema, train, per_file_label=mixed, runner=runner, beam_args=beam_args)


def check_dataset(
    dataset: Dataset, source: str = "", *, runner: str = "DirectRunner", beam_args: list[str] | None = None
) -> list[validate.Anomaly]:
    """``make validate``: the dataset's own files, or new data from ``source`` prepared like the
    dataset's kind prepares, checked; clean own files are recorded as validated."""
    if not dataset.validates:
        raise DataError(f"dataset {dataset.name!r} has no data validation (its prepare writes no statistics)")
    plan = dataset.validation_plan()
    if not source:
        found = validate_files(dataset, plan.files, plan, runner=runner, beam_args=beam_args)
        if not found:
            _remember(Path(dataset.root), plan.files)
        return found
    with tempfile.TemporaryDirectory(prefix="stoker-validate-") as tmp:
        new = dataset.plan_for_source(source, tmp, runner=runner, beam_args=beam_args)
        return validate_files(dataset, new.files, new, runner=runner, beam_args=beam_args)


def _remember(root: Path, paths: list[str]) -> None:
    record = read_record(root)
    record.setdefault("files", {}).update({p: stamp(p) for p in paths})
    _write_record(root, record)


def before_training(dataset: Dataset, mode: str, *, runner: str = "DirectRunner") -> None:
    """Host, before step 1: check the files that changed since they were validated (``data.validate``).

    ``error``: an anomaly raises :class:`DataError` naming feature, anomaly and file; ``warn``:
    logged, and the files stay unvalidated (checked again next run); ``off``: nothing.
    """
    if mode == "off" or not dataset.validates or not _local(dataset):
        return
    root = Path(dataset.root)
    if not (root / validate.SCHEMA).is_file():
        log.info("%s has no %s: nothing to validate against (make prepare writes one)", root, validate.SCHEMA)
        return
    plan = dataset.validation_plan()
    record = read_record(root).get("files", {})
    changed = [p for p in plan.files if not unchanged(p, record.get(p))]
    if not changed:
        return
    log.info(
        "%s: %d file(s) changed since they were validated: checking them (data.validate=%s)", root, len(changed), mode
    )
    found = validate_files(dataset, changed, plan, runner=runner)
    if not found:
        _remember(root, changed)
        return
    lines = [str(a) for a in found[:_LISTED]] + (
        [f"... and {len(found) - _LISTED} more"] if len(found) > _LISTED else []
    )
    message = (
        f"{len(found)} data anomal{'y' if len(found) == 1 else 'ies'} in {dataset.name} "
        f"against {root / validate.SCHEMA} "
        "(feature -> anomaly -> file):\n  " + "\n  ".join(lines) + "\nFix or remove the file(s); or, if the change is "
        f"intended, edit {validate.SCHEMA} (or delete it and `make prepare DATASET={dataset.name}` to infer a new "
        f"one); `make validate DATASET={dataset.name}` lists them all; SET=data.validate=warn trains anyway"
    )
    if mode == "error":
        raise DataError(message)
    log.warning("%s", message)
