"""tf.data service, exactly once: one service job per epoch, a ledger of ids, the missing part read here.

TensorFlow's ``distributed_epoch`` mode is at-most-once: the files (splits) a worker holds when it
dies are never handed out again. So every example travels with its canonical index (the split's
files in sorted order, each file's records in file order; the record counts per file come from
``dataset_info.json``, :class:`ingest.order.Order`), and the client of one epoch:

1. opens a service job over the files still holding examples it wants (a resumed run's job
   leaves out what its checkpoint's ledger says was consumed: whole files are not read again,
   consumed records of a file in flight are dropped on the worker before parsing);
2. keeps the ids it received; a restarted worker that sends an example again is dropped;
3. once the job ends, reads the missing examples itself (the same per-epoch pipeline over the
   files holding them, records filtered by offset) and hands them out after the rest.

Batches are cut here, ``batch_size`` at a time, and each example's (epoch, id) enters the
:class:`ingest.ledger.Ledger` as its batch is handed to training, which is what a checkpoint
saves (``Built.ledger``). Nothing after that hand-off buffers batches (no host prefetch), so a
batch in the ledger is a batch a step took.

Where it runs: :func:`epoch_dataset` runs on the service's workers (and here for the missing
part); :class:`Reader` is the client, on the host, inside ``tf.data.Dataset.from_generator``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from ingest import service_client, stages
from ingest.built import Built, Position, Request
from ingest.dataset import Dataset
from ingest.ledger import Ledger
from ingest.options import PipelineOptions
from ingest.order import Order
from stoker.errors import DataError

log = logging.getLogger(__name__)
Chunk = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]  # epochs, ids, examples (leading dim alike)


def unsupported(dataset: Dataset, split: str, options: PipelineOptions) -> str:
    """Why the service cannot read ``split`` exactly once under these options ('' when it can)."""
    if not options.data_service:
        return "no DATA_SERVICE="
    if not options.service_exactly_once:
        return "pipeline.service_exactly_once=false"
    if options.iterator_checkpoint:
        return "pipeline.iterator_checkpoint=true (TensorFlow's iterator state, at most once)"
    if options.cache_path:
        return "pipeline.cache_path (a disk cache is read in order only)"
    if options.service_mode != "dynamic":
        return "pipeline.service_mode=off (every worker reads every file)"
    if dataset.in_memory(split) is not None:
        return f"dataset {dataset.name!r} is made in memory (no files for the service to hand out)"
    if options.skip_corrupt:
        return "pipeline.skip_corrupt=true (skipped records would never arrive)"
    if dataset.options.balance != "none" or dataset.options.class_weights or dataset.options.weights:
        return "data.balance, data.class_weights or data.weights (resampled epochs are drawn by position)"
    return ""


def epoch_dataset(
    dataset: Dataset, order: Order, options: PipelineOptions, request: Request, epoch: int, wanted: np.ndarray
) -> tf.data.Dataset:
    """(ids, examples) batches of ``epoch``'s examples flagged in ``wanted`` [N] (service workers, or here).

    Only files holding a wanted example are listed; each record is numbered from its file's first
    canonical index and dropped before parsing when not wanted. Training shuffles the file list
    (keyed by seed and epoch), shuffles examples in a buffer on the worker and augments with
    randomness keyed by (seed, epoch, id): the same for an example whichever worker reads it.
    """
    starts, counts = order.starts, np.asarray(order.counts, np.int64)
    chosen = [f for f in range(len(counts)) if wanted[starts[f] : starts[f] + counts[f]].any()]
    training, n, seed = request.training, order.num_records, request.seed
    if training and options.shuffle:
        chosen = list(np.random.default_rng([seed, epoch]).permutation(chosen))
    names = tf.constant([order.files[f] for f in chosen], tf.string)
    files = tf.data.Dataset.from_tensor_slices((names, tf.constant(starts[chosen], tf.int64)))
    keep = tf.constant(wanted)
    calls = stages._calls(options.read_parallelism) if options.interleave else None

    per = options.parse_batch

    def numbered(path, start):  # blocks of a file's records, numbered and cut to the wanted ones
        def cut(j, records):
            ids = start + j * per + tf.range(tf.shape(records, out_type=tf.int64)[0])
            mask = tf.gather(keep, ids)
            return tf.boolean_mask(ids, mask), tf.boolean_mask(records, mask)

        return dataset.read(path).batch(per).enumerate().map(cut)

    blocks = files.interleave(
        numbered, cycle_length=options.cycle_length, num_parallel_calls=calls, deterministic=False if calls else None
    )
    blocks = blocks.filter(lambda ids, records: tf.size(ids) > 0)
    mapped = stages._calls(options.map_parallelism)
    ds = blocks.map(lambda i, r: (i, dataset.parse(r)), num_parallel_calls=mapped).unbatch()
    if training and options.shuffle and request.shuffle_buffer > 1:
        ds = ds.shuffle(request.shuffle_buffer, seed=seed * 1_000_003 + epoch)
    if training and dataset.has_augment:
        key = tf.constant([seed, epoch * n], tf.int64)
        ds = ds.map(lambda i, ex: (i, dataset.augment(ex, key + tf.stack([tf.constant(0, tf.int64), i]))), mapped)
    ds = ds.map(lambda i, ex: (i, dataset.preprocess(ex)), num_parallel_calls=mapped)
    return stages.with_options(ds.batch(request.batch_size), options=options)


class Reader:
    """The client (host): each epoch's service job, duplicates dropped, the missing part read here."""

    def __init__(
        self, dataset: Dataset, order: Order, options: PipelineOptions, request: Request, start: bytes = b""
    ) -> None:
        self.dataset, self.order, self.options, self.request = dataset, order, options, request
        self.start = start  # the checkpoint's ledger (b"": from the start of epoch 0)
        self.ledger = self._ledger()  # the live ledger of the newest iterator
        self.job_name = f"{dataset.name}-{request.split}"

    def _ledger(self) -> Ledger:
        n = self.order.num_records
        return Ledger.from_bytes(self.start, n) if self.start else Ledger(n)

    def state(self) -> bytes:
        """Host, at a checkpoint: the ledger of what training took (see :class:`ingest.ledger.Ledger`)."""
        return self.ledger.to_bytes()

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Batches of ``batch_size`` examples, epoch after epoch (one epoch unless training repeats).

        The next epoch's job starts when this one does: starting a job takes the service a second
        or more here, which would otherwise stall every epoch change."""
        self.ledger = ledger = self._ledger()
        size, buffer, epoch = self.request.batch_size, _Buffer(), ledger.epoch
        repeat = self.request.training and self.request.repeat
        job, upcoming = self._open(epoch, ledger.consumed(epoch)), None
        try:
            while True:
                upcoming = self._open(epoch + 1, ledger.consumed(epoch + 1)) if repeat else None
                for chunk in self._epoch(job):
                    buffer.add(chunk)
                    while len(buffer) >= size:
                        epochs, ids, batch = buffer.take(size)
                        ledger.consume(epochs, ids)  # handed over now: nothing downstream buffers
                        yield batch
                if not repeat:
                    break
                job.close()
                job, upcoming, epoch = upcoming, None, epoch + 1
        finally:
            for left in (job, upcoming):
                if left is not None:
                    left.close()
        if len(buffer) and not self.request.training:  # evaluation keeps its last, short batch
            epochs, ids, batch = buffer.take(len(buffer))
            ledger.consume(epochs, ids)
            yield batch

    def _epoch(self, job: _Job) -> Iterator[Chunk]:
        """The examples of ``job.epoch`` not yet received (``job.received`` is updated), each once."""
        epoch, received = job.epoch, job.received
        if job.pull is not None:
            elements = job.pull.elements(timeout_s=self.options.service_timeout_s, where=job.where)
            yield from self._take(elements, epoch, received)
        missing = int((~received).sum())
        if missing:
            files = sorted({self.order.files[f] for f in self._files_of(~received)})
            log.warning(
                "tf.data service epoch %d ended without %d examples (a worker lost its files in flight?); "
                "reading them here from %d files: %s",
                epoch,
                missing,
                len(files),
                ", ".join(files[:4]) + (" ..." if len(files) > 4 else ""),
            )
            local = epoch_dataset(self.dataset, self.order, self.options, self.request, epoch, ~received)
            yield from self._take(local.as_numpy_iterator(), epoch, received)
        if not received.all():
            raise DataError(
                f"{int((~received).sum())} examples of {self.dataset.name}/{self.request.split} epoch {epoch} came "
                "neither from the service nor from their files: the record counts in dataset_info.json do not "
                f"match the files; re-run `make prepare DATASET={self.dataset.name}`"
            )

    def _take(self, elements, epoch: int, received: np.ndarray) -> Iterator[Chunk]:
        for ids, examples in elements:
            ids = np.asarray(ids)
            keep = ~received[ids]  # a restarted worker may send what another already did
            received[ids[keep]] = True
            if keep.all():  # the usual case: no copy
                yield np.full(len(ids), epoch, np.int64), ids, {k: np.asarray(v) for k, v in examples.items()}
            elif keep.any():
                kept = {k: np.asarray(v)[keep] for k, v in examples.items()}
                yield np.full(int(keep.sum()), epoch, np.int64), ids[keep], kept
            if received.all():  # the epoch is whole: close the job rather than wait for its end (seconds)
                return

    def _open(self, epoch: int, received: np.ndarray) -> _Job:
        """Start the service job of ``epoch``'s examples not in ``received`` (none when all were)."""
        job = _Job(epoch, received, f"{self.options.data_service} job {self.job_name}-e{epoch}-{uuid.uuid4().hex[:8]}")
        if received.all():
            return job
        ds = epoch_dataset(self.dataset, self.order, self.options, self.request, epoch, ~received)
        remote = ds.apply(
            tf.data.experimental.service.distribute(
                processing_mode="distributed_epoch",
                service=self.options.data_service,
                job_name=job.where.rsplit(" ", 1)[1],
            )
        )
        threads: list = []
        job.pull = service_client.Pull(remote, threads)
        service_client._SESSIONS[job.key] = (self.options.data_service, job.pull, threads)  # close_sessions ends it
        return job

    def _files_of(self, flags: np.ndarray) -> list[int]:
        starts, counts = self.order.starts, self.order.counts
        return [f for f in range(len(counts)) if flags[starts[f] : starts[f] + counts[f]].any()]


class _Job:
    """One epoch's service job, started when made (host): what was received of the epoch, and its pull."""

    def __init__(self, epoch: int, received: np.ndarray, where: str) -> None:
        self.epoch, self.received, self.where = epoch, received, where
        self.pull: service_client.Pull | None = None
        self.key = uuid.uuid4().int >> 65

    def close(self) -> None:
        """Stop pulling. The session stays listed until its thread ends, so that ``close_sessions``
        (``LocalCluster.stop``) waits for it before the servers go (else its client outlives them)."""
        if self.pull is not None:
            self.pull.close()
        for key, (_, pull, _) in list(service_client._SESSIONS.items()):
            if isinstance(pull, service_client.Pull) and pull.stop.is_set() and not pull.thread.is_alive():
                service_client._SESSIONS.pop(key, None)


class _Buffer:
    """Examples received and not yet handed out, cut into batches in arrival order (host)."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk[1])

    def take(self, size: int) -> Chunk:
        if len(self.chunks[0][1]) == size:  # a worker's whole batch: handed over as it came
            self.size -= size
            return self.chunks.pop(0)
        epochs = np.concatenate([c[0] for c in self.chunks])
        ids = np.concatenate([c[1] for c in self.chunks])
        examples = {k: np.concatenate([c[2][k] for c in self.chunks]) for k in self.chunks[0][2]}
        rest = (epochs[size:], ids[size:], {k: v[size:] for k, v in examples.items()})
        self.chunks, self.size = ([rest] if len(rest[1]) else []), len(rest[1])
        return epochs[:size], ids[:size], {k: v[:size] for k, v in examples.items()}


def build(dataset: Dataset, request: Request, options: PipelineOptions, order: Order) -> Built:
    """Host, at build time: this pipeline's batches through the service, each example of an epoch once.

    ``request.position`` (training) carries the checkpoint's ledger; its epoch and count must agree.
    """
    if request.pipelines > 1:
        raise DataError(
            f"DATA_SERVICE= reads exactly once for one input pipeline, not {request.pipelines}: train on one "
            "worker, or set pipeline.service_exactly_once=false (at most once, TensorFlow's iterator checkpoints)"
        )
    position = request.position or Position(seed=request.seed)
    reader = Reader(dataset, order, options, request, position.ledger)
    _check_position(reader.ledger, position, dataset)
    probe = epoch_dataset(dataset, order, options, request, 0, np.ones(order.num_records, bool))
    spec = tf.nest.map_structure(
        lambda s: tf.TensorSpec([request.batch_size if request.training else None, *s.shape[1:]], s.dtype),
        probe.element_spec[1],
    )
    ds = tf.data.Dataset.from_generator(reader.batches, output_signature=spec)
    handoff = tf.data.Options()
    handoff.experimental_optimization.inject_prefetch = False  # an injected prefetch would run ahead of the ledger
    ds = ds.with_options(handoff)
    return Built(ds, order.files, "none", request.batch_size, engine="tfdata/service-once", ledger=reader.state)


def _check_position(ledger: Ledger, position: Position, dataset: Dataset) -> None:
    if not position.ledger and (position.epoch or position.consumed):
        raise DataError(
            f"input position epoch {position.epoch} after {position.consumed} examples of {dataset.name} has no "
            "tf.data service ledger, so which examples were consumed is unknown: resume from a checkpoint written "
            "with DATA_SERVICE=, or start a new RUN="
        )
    if position.ledger and (ledger.epoch, ledger.count()) != (position.epoch, position.consumed):
        raise DataError(
            f"the checkpoint's input ledger stands at epoch {ledger.epoch} after {ledger.count()} examples but its "
            f"position says epoch {position.epoch} after {position.consumed} ({dataset.name}): the checkpoint "
            "is damaged; resume from an older one or start a new RUN="
        )


def order_of(dataset: Dataset, split: str) -> Order:
    """The canonical numbering of ``split``'s examples: record counts per file from ``dataset_info.json``."""
    files = tuple(dataset.files(split))
    counts = tuple(dataset.count_records(f) for f in files)  # dataset_info.json's counts when it has them
    if not sum(counts):
        raise DataError(f"split {split!r} of dataset {dataset.name!r} has no examples; re-run make prepare")
    return Order(counts, 0, "none", files=files)
