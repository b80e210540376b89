"""Writing files so a reader never sees half of one: a temporary name in the same folder, then a rename."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through ``.<name>.<pid>.tmp`` beside it and ``os.replace``."""
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


def write_json_atomic(path: str | os.PathLike, text: str) -> None:
    """``atomic_write`` for a JSON text (metrics.json, config.json)."""
    atomic_write(path, text)
