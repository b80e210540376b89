"""The dataset registry: built-ins registered here, others through ``stoker.datasets`` entry points.

Besides registered names, ``DATASET`` may be a kind made from the user's files
(``images``, ``table``, ``tfrecord`` with ``SOURCE=``), the name of a folder prepared from one
(``<data_dir>/<name>/dataset_info.json`` says its kind), or ``tfds:NAME[/CONFIG][:VERSION]``.
"""

from __future__ import annotations

from ingest.dataset import Dataset
from ingest.datasets import mixed, sourced, tfds_prepared
from ingest.datasets.clicks import Clicks
from ingest.datasets.foreign import ForeignTFRecord  # noqa: F401  (registers DATASET=tfrecord)
from ingest.datasets.images import ImageFolder  # noqa: F401 (registers DATASET=images)
from ingest.datasets.shapes import Shapes
from ingest.datasets.synthetic import Synthetic
from ingest.datasets.table import Table  # noqa: F401  (registers DATASET=table)
from ingest.datasets.tfds_prepared import TfdsDataset
from ingest.options import DataOptions
from stoker.errors import DataError
from stoker.registry import Registry, RegistryError

REGISTRY: Registry[type[Dataset]] = Registry("dataset", group="stoker.datasets")
for _cls in (Shapes, Clicks, Synthetic):
    REGISTRY.register(_cls.name, _cls)


def get(options: DataOptions) -> Dataset:
    """The dataset named by ``options.name``, made with ``options`` (``a+b``: a mix of registered ones)."""
    if "+" in options.name:
        return mixed.make(options, lambda n: lookup(n, options.data_dir))
    dataset = lookup(options.name, options.data_dir)(options)
    if options.name in sourced.KINDS and dataset.name in REGISTRY.names():
        raise DataError(
            f"SOURCE={options.source!r} would be prepared as {dataset.name!r}, which is a registered dataset's "
            f"name; give NAME=<another name>"
        )
    return dataset


def lookup(name: str, data_dir: str | None = None) -> type[Dataset]:
    """The class that reads dataset ``name``: registered, a kind, a prepared folder's kind, or tfds:..."""
    if name.startswith("tfds:"):
        return TfdsDataset
    if name in sourced.KINDS:
        return sourced.KINDS[name]
    try:
        cls = REGISTRY.get(name)
    except RegistryError as err:
        kind = sourced.read_info(data_dir or DataOptions().data_dir, name).get("kind")
        if kind in sourced.KINDS:
            return sourced.KINDS[kind]
        raise RegistryError(
            f"{err}; or DATASET={'|'.join(sorted(sourced.KINDS)) or 'images'} SOURCE=<your files> "
            f"(a folder prepared from them is then a dataset by its name)"
        ) from None
    return cls


def names(data_dir: str) -> dict[str, str]:
    """Every dataset name usable as DATASET: registered ones (-> origin) and prepared folders (-> kind)."""
    out = {n: REGISTRY.origin(n) or "stoker (built-in)" for n in REGISTRY.names()}
    for name, kind in sourced.prepared(data_dir).items():
        out.setdefault(name, f"prepared ({kind})")
    for name in tfds_prepared.found(data_dir):
        out.setdefault(name, "prepared by TFDS")
    return out


__all__ = ["REGISTRY", "DataError", "Dataset", "get", "lookup", "names"]
