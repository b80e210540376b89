"""Datasets made from the user's own files, with no code: ``DATASET=images|table|tfrecord SOURCE=...``.

A *kind* (:class:`FromSource` subclass: image folders, CSV/Parquet tables, foreign TFRecords)
turns ``SOURCE`` into a prepared folder ``<data_dir>/<name>/`` (TFRecord shards plus
``dataset_info.json``, or for foreign TFRecords only the counts and inferred spec). The name is
``NAME=``, else SOURCE's folder or file stem. From then on that folder *is* a dataset:
``DATASET=<name>`` finds it by its ``dataset_info.json`` (whose ``kind`` says which class reads
it) and trains on it like a built-in, and ``make datasets`` lists it.

A prepared folder remembers a fingerprint of the listing it came from (every file's path, size
and modification time); when SOURCE changes (files added, removed or modified) the next run
prepares it again (:meth:`FromSource.stale`).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar

from ingest.dataset import INFO_FILE, Dataset
from ingest.options import DataOptions
from stoker import storage
from stoker.errors import DataError

_GLOB_CHARS = re.compile(r"[*?\[]")
KINDS: dict[str, type[FromSource]] = {}  # kind name -> class (DATASET=<kind> SOURCE=...)


def register_kind(cls: type[FromSource]) -> type[FromSource]:
    """Class decorator: ``DATASET=<cls.kind>`` makes this kind from SOURCE."""
    KINDS[cls.kind] = cls
    return cls


def expand(source: str) -> str:
    """``source`` with ``~`` and environment variables expanded (a URL is left as it is)."""
    return source if storage.is_url(source) else os.path.expandvars(os.path.expanduser(source))


def stem(source: str) -> str:
    """The default dataset name of ``source``: its folder name, or its file stem.

    ``~/flowers`` -> ``flowers``; ``data/sales/*.csv`` -> ``sales``; ``/x/log.parquet`` -> ``log``.
    """
    path = expand(source).rstrip("/")
    parts = [p for p in re.split(r"[\\/]", path) if p and not _GLOB_CHARS.search(p)]
    if not parts:
        raise DataError(f"SOURCE={source!r} names no folder or file: give a path (or NAME= for the dataset's name)")
    last = parts[-1]
    if not _GLOB_CHARS.search(path.split("/")[-1]) and "." in last and not os.path.isdir(path):
        last = last.split(".")[0]  # a single file: its stem
    name = re.sub(r"[^a-z0-9_-]+", "-", last.lower()).strip("-")
    if not name:
        raise DataError(f"SOURCE={source!r}: cannot make a dataset name from {last!r}; give NAME=<name>")
    return name


def fingerprint(paths: list[str]) -> str:
    """A digest of a listing: each file's path, size and modification time (sha256, hex)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        st = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def read_info(data_dir: str, name: str) -> dict[str, Any]:
    """``<data_dir>/<name>/dataset_info.json`` parsed, or {} when there is none (or it is not a prepared kind)."""
    path = storage.location(data_dir) / name / INFO_FILE
    try:
        if not path.is_file():
            return {}
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class FromSource(Dataset):
    """Base of the kinds: a dataset whose name and files come from ``SOURCE`` (or its prepared folder).

    Subclasses set :attr:`kind`, list SOURCE's files (:meth:`source_files`) and prepare them;
    ``prepare`` must write ``kind``, ``source`` (the SOURCE string) and ``source_fingerprint``
    (:func:`fingerprint` of :meth:`source_files`) into ``dataset_info.json``.
    """

    kind: ClassVar[str] = ""

    def __init__(self, options: DataOptions | None = None) -> None:
        options = options or DataOptions(name=self.kind)
        if options.name == self.kind:  # DATASET=images SOURCE=...: name from NAME= or SOURCE
            if not options.source:
                raise DataError(
                    f"DATASET={self.kind} needs SOURCE=<{self._source_hint}>; or, once prepared, "
                    f"DATASET=<its name> (`make datasets` lists prepared folders)"
                )
            name = options.prepared_name or stem(options.source)
        else:  # DATASET=<prepared name>: SOURCE (if not given) is where it was prepared from
            name = options.name
        if not options.source:
            options = dataclasses.replace(options, source=read_info(options.data_dir, name).get("source", ""))
        super().__init__(options)
        self.name = name  # the instance's name: the folder under data_dir

    _source_hint: ClassVar[str] = "path"

    @property
    def source(self) -> str:
        """SOURCE with ``~`` expanded ('' when neither given nor recorded)."""
        return expand(self.options.source)

    def required_source(self) -> str:
        """:attr:`source`; raises :class:`DataError` saying what to give when there is none."""
        if not self.source:
            raise DataError(f"dataset {self.name!r} has no SOURCE: give SOURCE=<{self._source_hint}>")
        return self.source

    def source_files(self) -> list[str]:
        """Every file of SOURCE, sorted; raises :class:`DataError` naming SOURCE when there are none."""
        raise NotImplementedError

    def glob_source(self, default_patterns: tuple[str, ...]) -> list[str]:
        """Files of SOURCE: the glob as given, or a folder's files matching ``default_patterns``."""
        source = self.required_source()
        if _GLOB_CHARS.search(source):
            found = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
        elif os.path.isdir(source):
            found = sorted(
                {p for pat in default_patterns for p in glob.glob(os.path.join(source, "**", pat), recursive=True)}
            )
        elif os.path.isfile(source):
            found = [source]
        else:
            raise DataError(f"SOURCE={self.options.source!r} does not exist: give an existing folder, file or glob")
        if not found:
            raise DataError(
                f"SOURCE={self.options.source!r} matches no files"
                + (f" ({', '.join(default_patterns)} under the folder)" if os.path.isdir(source) else "")
            )
        return found

    def plan_for_source(self, source: str, workdir: str, *, runner: str = "DirectRunner", beam_args=None) -> Any:
        """New data from ``source`` prepared the way this kind prepares, into ``workdir/<name>`` (not over
        the dataset), with this dataset's LABEL and FEATURE; its validation plan."""
        info = self.info
        options = dataclasses.replace(
            self.options,
            name=self.kind,
            source=source,
            prepared_name=self.name,
            data_dir=workdir,
            label=self.options.label or info.get("label", ""),
            feature=self.options.feature or info.get("feature", ""),
        )
        new = type(self)(options)
        new.prepare(runner=runner, beam_args=beam_args)
        plan = new.validation_plan()
        ours, theirs = info.get("label_names"), new.info.get("label_names")
        if plan.int_label and ours and theirs and ours != theirs:  # class ids would mean other classes
            raise DataError(
                f"SOURCE={source} has the classes {theirs}, {self.name} has {ours}: its class ids would not mean "
                "the same classes; give it the same class folders (an empty class folder is not allowed either)"
            )
        return plan

    def stale(self) -> str:
        """Why the prepared folder must be prepared again ('' when it is current)."""
        info = self.info
        if not info:
            return ""
        if info.get("kind") != self.kind:
            return f"{self.root} holds a {info.get('kind') or 'built-in'} dataset, not a {self.kind} one"
        if not self.source or storage.is_url(self.source):
            return ""  # nothing to compare with (prepared elsewhere, or SOURCE on object storage)
        try:
            now = fingerprint(self.source_files())
        except DataError:
            return ""  # SOURCE is gone: train on what was prepared from it
        if now != info.get("source_fingerprint"):
            return (
                f"SOURCE={self.options.source} changed since {self.root} was prepared (files added, removed, modified)"
            )
        return ""


def prepared(data_dir: str) -> dict[str, str]:
    """Prepared folders under ``data_dir`` made from a SOURCE: name -> kind."""
    root = storage.location(data_dir)
    if isinstance(root, storage.Url) or not Path(root).is_dir():
        return {}
    out = {}
    for info_path in sorted(Path(root).glob(f"*/{INFO_FILE}")):
        kind = read_info(data_dir, info_path.parent.name).get("kind")
        if kind:
            out[info_path.parent.name] = kind
    return out
