"""Training pipelines addressed by input position: what the tf.data engine builds from a Position.

The stream of one input pipeline is a function of (seed, position, topology) alone
(``ingest.order``), so a checkpoint keeps three numbers instead of TensorFlow's iterator state,
and a run resumes on any number of workers. Three readers give the same sequence:

- ``decoded``: the split parsed once into memory in canonical order (when the parsed split
  fits ``pipeline.cache_budget_mb``; today's memory cache), then read by index: each example
  sliced out of the table (no copy) in the per-example step, or blocks gathered for batch-wise
  pipelines.
- ``encoded``: the split's serialized records in memory, gathered by index and parsed per
  batch (``pipeline.shuffle=global`` when the parsed split does not fit).
- ``stream``: the epoch's files read in the order's file permutation, ``order_cycle`` at a
  time round-robin, cut into windows of ``W`` records permuted in memory, this pipeline's
  slots kept before parsing. One window of serialized records is in memory; resuming skips
  the records of one group of files before the window.

After the reader come the same stages as the stage list: augment (keyed by the global position,
so every topology draws the same randomness), preprocess, batch and options. With
``pipeline.vectorize``, a dataset whose preprocess works on batches preprocesses after ``batch``,
once per batch; one with nothing to augment as well (``Dataset.batch_wise``) skips the per-example
step altogether: the decoded and encoded readers' blocks are cut into batches (``rebatch``) and
each batch is preprocessed once. The batches are the same either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

import tensorflow as tf

from ingest import integrity, resample, service_once, stages
from ingest.built import Built, Position, Request
from ingest.dataset import Dataset
from ingest.options import PipelineOptions
from ingest.order import Order, Slots
from stoker import storage
from stoker.errors import DataError

log = logging.getLogger(__name__)
_BIG_BLOCK = 1 << 40  # interleave block length that takes whole files: concatenation order
_READERS = 8  # files read in parallel by the stream reader (of the order's cycle)
_CHUNK = 1024  # records read per step when the order does not permute (mode none)


def unsupported(dataset: Dataset, options: PipelineOptions) -> str:
    """Why this dataset and options cannot be addressed by position ('' when they can)."""
    if options.iterator_checkpoint:
        return "pipeline.iterator_checkpoint=true"
    if options.engine != "tfdata":
        return f"pipeline.engine={options.engine} (DALI keeps its own reader state)"
    if options.data_service:
        why = service_once.unsupported(dataset, dataset.options.train_split, options)
        if why:
            return f"DATA_SERVICE= with {why} (the service's workers hold the read state)"
    if options.skip_corrupt:
        return "pipeline.skip_corrupt=true (skipped records would move every later position)"
    if options.cache_path:
        return "pipeline.cache_path (a disk cache is read in order only)"
    return ""


def mode_of(options: PipelineOptions, shuffle_buffer: int) -> str:
    """The order's mode for a training request under these options."""
    if options.shuffle == "global":
        return "global"
    return "window" if options.shuffle and shuffle_buffer > 1 else "none"


def order_for(dataset: Dataset, split: str, options: PipelineOptions, *, seed: int, shuffle_buffer: int) -> Order:
    """The training order of ``split``: record counts per file from ``dataset_info.json`` (else counted)."""
    quota = quota_for(dataset, split)
    mode = mode_of(options, shuffle_buffer)
    if quota is not None:
        if mode == "none":
            raise DataError(
                f"{quota_reason(dataset)} draws each epoch as one permutation; it needs pipeline.shuffle=true or global"
            )
        mode = "global"  # the draws are read by index (decoded or encoded reader)
    files: tuple[str, ...] = ()
    if dataset.in_memory(split) is not None:
        n = dataset.num_examples(split)
        if not n:
            raise DataError(f"dataset {dataset.name!r} does not say how many examples {split!r} has (num_examples)")
        counts: tuple[int, ...] = (n,)
    else:
        files = tuple(dataset.files(split))  # listed and checked once per run: the build reuses them
        counts = tuple(_count(dataset, path) for path in files)
    if not sum(counts):
        raise DataError(f"split {split!r} of dataset {dataset.name!r} has no examples; re-run make prepare")
    window = mode == "window"
    # Shards are often written by class or by source: the window order reads many files round-robin
    # (pipeline.order_cycle, all of them for up to 64) so that each window mixes them.
    cycle = min(len(counts), options.order_cycle) if window else 1
    return Order(counts, seed, mode, shuffle_buffer if window else 0, cycle, files, quota)


def quota_reason(dataset: Dataset) -> str:
    """The settings that resample this dataset's training stream ('' when none do)."""
    o = dataset.options
    asked = [f"data.balance={o.balance}"] if o.balance != "none" else []
    asked += [f"data.class_weights={','.join(map(str, o.class_weights))}"] if o.class_weights else []
    asked += [f"data.weights={','.join(map(str, o.weights))}"] if o.weights else []
    return " and ".join(asked)


def quota_for(dataset: Dataset, split: str) -> resample.Quota | None:
    """Class balance (``data.balance``, ``data.class_weights``) or weighted mixing (``data.weights``)."""
    o = dataset.options
    targets = o.class_weights or ((1.0,) * dataset.num_classes if o.balance == "uniform" else ())
    if o.weights and targets:
        raise DataError(f"{quota_reason(dataset)}: balance a mix or weight its sources, not both in one run")
    if o.weights:
        return resample.mix(dataset.source_sizes(split), o.weights, tuple(s.name for s in dataset.sources))
    if targets:
        labels = dataset.labels(split)
        quota = resample.balance(labels, targets, dataset.label_names)
        log.info(
            "%s: %s resamples each epoch to %s of %s",
            dataset.name,
            quota_reason(dataset),
            ", ".join(f"{n} {t}" for n, t in zip(quota.names, quota.take, strict=True)),
            ", ".join(f"{n} {c}" for n, c in zip(quota.names, quota.sizes, strict=True)),
        )
        return quota
    return None


def _count(dataset: Dataset, path: str) -> int:
    if dataset.expected_records(path) is None:
        log.info("%s: no record count in dataset_info.json; counting its records", path)
    return dataset.count_records(path)


def reader_kind(dataset: Dataset, split: str, files: tuple[str, ...], options: PipelineOptions, order: Order) -> str:
    """decoded, encoded or stream (see the module docstring); ``files`` are the split's (none in memory).

    ``pipeline.cache_form=encoded`` holds the records instead of the parsed values (smaller, parsed
    every epoch); so does a decoded cache that does not fit, when the records do."""
    cached = bool(options.cache)
    if (
        cached
        and options.cache_form == "decoded"
        and stages.memory_cache_fits(dataset, split, order.num_records, options)
    ):
        return "decoded"
    if order.mode != "global" and not cached:
        return "stream"
    if not files:
        return "encoded"
    encoded_mb = sum(storage.size(f) for f in files) / 2**20
    if encoded_mb <= options.cache_budget_mb:
        return "encoded"
    if order.mode != "global":
        log.warning(
            "not caching %s/%s: its %.0f MiB of records exceed pipeline.cache_budget_mb=%g too; streaming from files",
            dataset.name,
            split,
            encoded_mb,
            options.cache_budget_mb,
        )
        return "stream"
    raise DataError(
        f"pipeline.shuffle=global on {dataset.name}/{split} holds its {encoded_mb:.0f} MiB of records in memory, "
        f"more than pipeline.cache_budget_mb={options.cache_budget_mb}; raise the budget or use "
        "pipeline.shuffle=true (a window of data.shuffle_buffer records)"
    )


def build(dataset: Dataset, request: Request, options: PipelineOptions) -> Built:
    """This input pipeline's training batches from ``request.position`` in ``request.order`` on, forever."""
    position, order = request.position or Position(), request.order
    if order is None:
        raise ValueError("a position-addressed build needs request.order (ingest.pipeline.build sets it)")
    n = order.num_examples
    if position.consumed >= n or position.consumed < 0 or position.epoch < 0:
        raise DataError(f"input position {position} is outside an epoch of {n} examples")
    slots = Slots(
        global_batch=request.batch_size * request.pipelines,
        pipelines=request.pipelines,
        index=request.index,
        start=position.epoch * n + position.consumed,
    )
    files = order.files
    kind = reader_kind(dataset, request.split, files, options, order)
    batch_wise = bool(options.vectorize) and dataset.batch_wise()
    if files and options.verify_framing and dataset.format == "tfrecord":
        integrity.verify_framing(dataset, list(files))  # a crafted length crashes TensorFlow's reader
    row = _itself  # the example of a stream item
    if kind == "stream":
        ds = _stream(dataset, files, options, order, slots)
    else:
        try:
            table = _table(dataset, request.split, files, options, order, parse=kind == "decoded")
        except integrity.READ_ERRORS as err:
            raise integrity.explain(err, dataset, list(files)) from None
        ds, row = _gathered(dataset, table, options, order, slots, parse=kind == "encoded", whole=batch_wise)
    ordered = dataclasses.replace(options, deterministic=True)  # the position fixes the order
    if kind != "stream" and batch_wise:
        # Blocks of gathered rows cut into batches (unbatch + batch without the per-example step),
        # each preprocessed once: the same batches as the per-example path, at a fraction of the cost.
        ds = ds.map(lambda g, rows: rows).rebatch(request.batch_size, drop_remainder=True)
        ds = ds.map(dataset.preprocess, num_parallel_calls=stages._calls(options.map_parallelism), deterministic=True)
        return _built(ds, files, request, kind, ordered, batch_wise=True)
    if dataset.has_augment:

        def augment(item, key):
            return dataset.augment(row(item), key)

        ds = stages.augment_keyed(ds, augment, options=ordered, seed=request.seed)
    else:
        ds = ds.map(lambda g, item: row(item))
    if options.vectorize and dataset.preprocesses_batches():  # augmented per example, preprocessed per batch
        ds = stages.batch(ds, size=request.batch_size, drop_remainder=True)
        ds = stages.per_example(ds, dataset.preprocess, options=ordered)
    else:
        ds = stages.per_example(ds, dataset.preprocess, options=ordered)
        ds = stages.batch(ds, size=request.batch_size, drop_remainder=True)
    return _built(ds, files, request, kind, ordered)


def _built(
    ds: tf.data.Dataset, files, request: Request, kind: str, ordered: PipelineOptions, *, batch_wise: bool = False
) -> Built:
    ds = stages.with_options(ds, options=ordered)
    shard_by = "positions" if request.pipelines > 1 else "none"
    cached = kind == "decoded"
    return Built(ds, files, shard_by, request.batch_size, cached, engine=f"tfdata/{kind}", batch_wise=batch_wise)


def _canonical_records(dataset: Dataset, split: str, files: tuple[str, ...], options: PipelineOptions):
    """Every record of ``split`` in canonical order (sorted files, then file order), read in parallel.

    ``block_length`` past any file's size makes the parallel interleave a concatenation."""
    memory = dataset.in_memory(split)
    if memory is not None:
        return memory
    calls = stages._calls(options.read_parallelism) if options.interleave else None
    return tf.data.Dataset.from_tensor_slices(list(files)).interleave(
        dataset.read,
        cycle_length=options.cycle_length,
        block_length=_BIG_BLOCK,
        num_parallel_calls=calls,
        deterministic=True if calls else None,
    )


_tables: dict | None = None  # while tables_reused(): tables built, by what they hold


@contextlib.contextmanager
def tables_reused():
    """Within: a split's in-memory table is built once and shared by every pipeline built (tuning)."""
    global _tables
    _tables = {}
    try:
        yield
    finally:
        _tables = None


def _table(dataset, split, files, options, order: Order, *, parse: bool):
    """The split in memory, canonical order: parsed examples, or serialized records."""
    key = (id(dataset), split, files, parse, order.num_records)
    if _tables is not None and key in _tables:
        return _tables[key]
    table = _new_table(dataset, split, files, options, order, parse=parse)
    if _tables is not None:
        _tables[key] = table
    return table


def _new_table(dataset, split, files, options, order: Order, *, parse: bool):
    records = _canonical_records(dataset, split, files, options)
    if parse:
        records = stages.parse(records, dataset.parse, options=options, ordered=True)
    table = records.batch(order.num_records + 1).get_single_element()
    got = int(tf.shape(tf.nest.flatten(table)[0])[0])
    if got != order.num_records:
        raise DataError(
            f"{dataset.name}/{split} holds {got} examples but its record counts say {order.num_records}; "
            f"re-run `make prepare DATASET={dataset.name}`"
        )
    return table


def _positions(order: Order, slots: Slots, epoch: tf.Tensor, batch: int) -> tf.data.Dataset:
    """Batches of (global position, place in epoch) this pipeline reads in ``epoch``."""
    lo, hi = slots.range_in_epoch(epoch, order.num_examples)
    base = epoch * order.num_examples
    return tf.data.Dataset.range(lo, hi).batch(batch).map(lambda j: (slots.position(j), slots.position(j) - base))


def _gathered(dataset, table, options, order: Order, slots: Slots, *, parse: bool, whole: bool):
    """(position, item) pairs read from the in-memory table by the order, epoch after epoch, and
    ``row``, which makes the example of an item: call it in the first per-example map.

    Parsed rows come as canonical indices, and ``row`` slices the example out of the table along
    its first axis, which shares the table's memory: an example is copied once, by ``batch``, as
    from the buffer shuffle's cache. Records (``parse``) are gathered and parsed in blocks of
    ``parse_batch`` (``row`` is the identity); ``whole`` keeps those blocks (batch-wise pipelines).
    """
    calls = stages._calls(options.map_parallelism)
    start_epoch = slots.start // order.num_examples
    sliced = not parse and not whole

    def epoch_batches(epoch):
        canonical = order.mapper(epoch)  # once per epoch (window mode: the epoch's stream table)

        def take(g, place):
            if sliced:
                return g, canonical(place)
            rows = tf.nest.map_structure(lambda t: tf.gather(t, canonical(place)), table)
            return g, dataset.parse(rows) if parse else rows

        return _positions(order, slots, epoch, options.parse_batch).map(
            take, num_parallel_calls=calls, deterministic=True if calls else None
        )

    blocks = tf.data.Dataset.range(start_epoch, 1 << 62).flat_map(epoch_batches)
    if sliced:
        # Not a map of its own: one more per-example stage cost more than the two copies it saves.
        return blocks.unbatch(), lambda i: tf.nest.map_structure(lambda t: t[i], table)
    return (blocks if whole else blocks.unbatch()), _itself


def _itself(example):
    return example


def _stream(dataset, files, options, order: Order, slots: Slots) -> tf.data.Dataset:
    """(position, example) pairs read from files in the order's sequence, one window at a time."""
    if not files:
        raise DataError(f"dataset {dataset.name!r} makes its records in memory: stream them from a table instead")
    if order.mode == "global":
        raise DataError("pipeline.shuffle=global reads by index from memory; it cannot stream")
    n = order.num_examples
    w = order.window if order.mode == "window" else _CHUNK  # windows only permute in window mode

    def epoch_records(epoch):
        lo, hi = slots.range_in_epoch(epoch, n)
        first = slots.position(lo) - epoch * n  # place in the epoch of this pipeline's first example
        window0 = tf.minimum(first, n - 1) // w
        windows = _from(dataset, files, options, order, epoch, window0 * w).batch(w).enumerate(start=window0)

        def shuffled(window, recs):
            size = tf.shape(tf.nest.flatten(recs)[0], out_type=tf.int64)[0]
            places = window * w + tf.range(size, dtype=tf.int64)
            if order.mode == "window":
                within = order.in_window(places, tf.cast(epoch, tf.int64)) - window * w
                recs = tf.nest.map_structure(lambda t: tf.gather(t, within), recs)
            return places + epoch * n, recs

        return windows.map(shuffled).unbatch().filter(lambda g, rec: slots.owns(g)).take(hi - lo)

    records = tf.data.Dataset.range(slots.start // n, 1 << 62).flat_map(epoch_records)
    return _parse(records, dataset, options)


def _parse(pairs: tf.data.Dataset, dataset: Dataset, options: PipelineOptions) -> tf.data.Dataset:
    """(position, record) -> (position, example): ``parse_batch`` records per call when vectorized,
    else one at a time through the same batched function (as :func:`ingest.stages.parse`)."""
    calls = stages._calls(options.map_parallelism)
    det = True if calls else None
    if options.vectorize:
        parsed = pairs.batch(options.parse_batch).map(
            lambda g, r: (g, dataset.parse(r)), num_parallel_calls=calls, deterministic=det
        )
        return parsed.unbatch()

    one = stages.one_at_a_time(dataset.parse)
    return pairs.map(lambda g, r: (g, one(r)), num_parallel_calls=calls, deterministic=det)


def _from(dataset, files, options, order: Order, epoch, start) -> tf.data.Dataset:
    """The records of ``epoch``'s stream from stream position ``start`` on (reads one group's skipped part)."""
    names = tf.constant(list(files))
    if order.mode != "window":  # canonical order: the sorted files one after another
        counts = tf.constant(order.counts, tf.int64)
        ends = tf.cumsum(counts)
        first = tf.searchsorted(ends, tf.reshape(start, [1]), side="right", out_type=tf.int64)[0]
        skips = tf.concat([[start - (ends[first] - counts[first])], tf.zeros_like(counts[first + 1 :])], 0)
        pairs = tf.data.Dataset.from_tensor_slices((names[first:], skips))
        return pairs.flat_map(lambda path, skip: dataset.read(path).skip(skip))
    cycle = order.cycle
    perm = order.file_permutation(epoch)
    counts = order.slot_counts(perm)  # [groups, cycle]
    group_ends = tf.cumsum(tf.reduce_sum(counts, 1))
    g0 = tf.searchsorted(group_ends, tf.reshape(start, [1]), side="right", out_type=tf.int64)[0]
    into = start - (group_ends[g0] - tf.reduce_sum(counts[g0]))
    # Round k of a group takes record k of every file that has one: resume at the round holding
    # ``into`` (each file skips min(count, k)) and drop the fewer than ``cycle`` records before it.
    rounds = tf.reduce_sum(tf.minimum(counts[g0][None, :], tf.range(max(order.counts) + 1, dtype=tf.int64)[:, None]), 1)
    k = tf.searchsorted(rounds, tf.reshape(into, [1]), side="right", out_type=tf.int64)[0] - 1
    skips0 = tf.minimum(counts[g0], k)
    padded = tf.concat([tf.gather(names, perm), tf.fill([tf.size(counts) - len(files)], "")], 0)
    paths = tf.reshape(padded, [-1, cycle])
    calls = min(cycle, _READERS) if options.interleave and cycle > 1 else None

    def group(g):
        skips = tf.where(g == g0, skips0, tf.zeros_like(skips0))
        files_ = tf.data.Dataset.from_tensor_slices((paths[g], skips, counts[g]))
        files_ = files_.filter(lambda path, skip, count: count > 0)
        return files_.interleave(
            lambda path, skip, count: dataset.read(path).skip(skip),
            cycle_length=cycle,
            block_length=1,
            num_parallel_calls=calls,
            deterministic=True if calls else None,
        )

    groups = tf.data.Dataset.range(g0, tf.shape(counts, out_type=tf.int64)[0])
    return groups.flat_map(group).skip(into - rounds[k])
