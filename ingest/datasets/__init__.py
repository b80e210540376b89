"""The dataset registry: built-ins registered here, others through ``stoker.datasets`` entry points."""

from __future__ import annotations

from ingest.dataset import Dataset
from ingest.datasets import mixed
from ingest.datasets.clicks import Clicks
from ingest.datasets.shapes import Shapes
from ingest.datasets.synthetic import Synthetic
from ingest.options import DataOptions
from stoker.registry import Registry

REGISTRY: Registry[type[Dataset]] = Registry("dataset", group="stoker.datasets")
for _cls in (Shapes, Clicks, Synthetic):
    REGISTRY.register(_cls.name, _cls)


def get(options: DataOptions) -> Dataset:
    """The dataset named by ``options.name``, made with ``options`` (``a+b``: a mix of registered ones)."""
    if "+" in options.name:
        return mixed.make(options, REGISTRY.get)
    cls = REGISTRY.get(options.name)
    return cls(options)
