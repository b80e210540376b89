"""Writing files so a reader never sees half of one: a temporary name in the same folder, then a rename.

On object storage (a :class:`stoker.storage.Url`) a rename is a copy and a delete, not atomic; an
object appears whole or not at all when its upload completes, so it is written under its final name.
"""

from __future__ import annotations

import os
from pathlib import Path

from stoker import storage


def atomic_write(path: str | os.PathLike | storage.Url, data: str | bytes) -> Path | storage.Url:
    """Write ``data`` to ``path`` through ``.<name>.<pid>.tmp`` beside it and ``os.replace``
    (a URL: one upload under the final name)."""
    if storage.is_url(path):
        url = storage.location(path)
        url.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return url
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    tmp.replace(path)
    return path


def atomic_target(path: str | os.PathLike) -> tuple[Path, Path]:
    """(temporary path, final path) for writers that stream into a file themselves; rename with
    ``tmp.replace(final)`` once complete."""
    final = Path(path)
    return final.with_name(f".{final.name}.{os.getpid()}.tmp"), final


def write_json_atomic(path: str | os.PathLike | storage.Url, text: str) -> None:
    """``atomic_write`` for a JSON text (metrics.json, config.json)."""
    atomic_write(path, text)
