"""What an engine hands back: the pipeline and what was decided while building it.

Neutral ground between the facade (``ingest.pipeline``) and the engines (``ingest.tfdata``,
``ingest.dali``), so neither imports the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from ingest.integrity import CorruptionReport
from ingest.order import Order


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a training stream stands: ``consumed`` examples of ``epoch`` taken by all workers together.

    With the seed it is all a checkpoint keeps of the input; every worker derives its read plan
    from it and the topology (``ingest.order``), so a run resumes on any number of workers.
    """

    epoch: int = 0
    consumed: int = 0
    seed: int = 0
    # With the tf.data service (whose order depends on which worker asks first): which examples of
    # the epoch were consumed, an ingest.ledger.Ledger's bytes (b"": none, or not the service).
    ledger: bytes = dataclasses.field(default=b"", repr=False)

    @classmethod
    def at(cls, examples: int, num_examples: int, seed: int) -> Position:
        """The position after ``examples`` examples in all (over epochs of ``num_examples``)."""
        return cls(examples // num_examples, examples % num_examples, seed)

    def examples(self, num_examples: int) -> int:
        """Examples taken since the start, over every epoch."""
        return self.epoch * num_examples + self.consumed


@dataclasses.dataclass(frozen=True, kw_only=True)
class Request:
    """One input pipeline's part of a build call, validated by the facade."""

    split: str
    batch_size: int  # per input pipeline (the global batch split evenly)
    training: bool  # shuffle, repeat and augment; evaluation reads each example once
    seed: int
    shuffle_buffer: int
    repeat: bool
    pipelines: int = 1  # input pipelines in the run (workers x hosts)
    index: int = 0  # this pipeline's index among them
    position: Position | None = None  # training from this input position (ingest.positioned); None: as before
    order: Order | None = None  # the training order the position counts in (with ``position``)


@dataclasses.dataclass(frozen=True)
class Built:
    """A pipeline and what was decided while building it (for logs, metrics and profiles)."""

    dataset: tf.data.Dataset
    files: tuple[str, ...]
    shard_by: str  # "files", "examples" or "none"
    batch_size: int  # per input pipeline
    cached: bool = False
    corrupt: CorruptionReport = dataclasses.field(default_factory=lambda: CorruptionReport(limit=0))
    batched_read: bool = False  # the reader handed blocks of records to the parse (read_batches)
    engine: str = "tfdata"
    batch_wise: bool = False  # whole batches gathered and preprocessed, no per-example step (ingest.positioned)
    build_s: float = 0.0  # seconds building took on the host (an in-memory table is filled here)
    ledger: Callable[[], bytes] | None = None  # the service's input ledger now (ingest.service_once), for checkpoints
