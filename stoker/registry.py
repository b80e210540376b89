"""A small typed registry that also discovers Python entry points.

Built-in objects register by decorator; other installed packages join through an entry
point group (``stoker.datasets``, ``stoker.models``), loaded lazily on the first lookup so
that importing stoker never imports a plug-in.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class RegistryError(KeyError):
    """An unknown or duplicate name; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it.
        return str(self.args[0])


class Registry(Generic[T]):
    """Names to objects, with entry-point discovery.

    Args:
        kind: what is registered, used in messages ("dataset", "model").
        group: the entry point group searched on the first lookup.
    """

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._discovered = group is None

    def register(self, name: str, obj: T | None = None, *, origin: str = "") -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as ``@registry.register("name")``."""

        def add(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered (by {self._origin[name] or 'stoker'}); "
                    f"pick another name"
                )
            self._items[name] = item
            self._origin[name] = origin
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The object registered as ``name``; the error names the closest registered names."""
        self._discover()
        if name in self._items:
            return self._items[name]
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise RegistryError(
            f"unknown {self.kind} {name!r}: {hint}registered {self.kind}s are {', '.join(self.names())}"
            + (f"; packages add more through the entry point group {self.group!r}" if self.group else "")
        )

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._discover()
        return sorted(self._items)

    def origin(self, name: str) -> str:
        """Where ``name`` came from: '' for stoker itself, else the distribution name."""
        self._discover()
        return self._origin.get(name, "")

    @contextlib.contextmanager
    def temporary(self, name: str, obj: T) -> Iterator[T]:
        """Register ``obj`` for the duration of a ``with`` block (for tests)."""
        self._discover()
        self.register(name, obj, origin="temporary")
        try:
            yield obj
        finally:
            self._items.pop(name, None)
            self._origin.pop(name, None)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for ep in metadata.entry_points(group=self.group):
            dist = ep.dist.name if ep.dist else "?"
            if ep.name in self._items:
                continue  # stoker's own built-ins are registered both ways.
            try:
                obj = ep.load()
            except Exception as err:  # A broken plug-in must not hide the others.
                log.warning("could not load %s %r from %s (%s): %s", self.kind, ep.name, dist, ep.value, err)
                continue
            self.register(ep.name, obj, origin="" if dist == "stoker" else dist)
