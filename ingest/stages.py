"""The pipeline's stages: small ``Dataset -> Dataset`` functions with keyword-only options.

Each runs in the tf.data runtime once built; building happens on the host. ``pipeline.build``
composes them in one fixed order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import tensorflow as tf

from ingest.options import AUTOTUNE, PipelineOptions
from stoker import storage

log = logging.getLogger(__name__)
Example = dict[str, tf.Tensor]


def _calls(n: int | None) -> int | None:
    """Parallel calls for tf.data: -1 is AUTOTUNE, 1 is sequential (None)."""
    if n is None or n == 1:
        return None
    return tf.data.AUTOTUNE if n == AUTOTUNE else n


def shard_plan(num_files: int, num_pipelines: int) -> str:
    """'files' when every input pipeline can get at least one file, else 'examples'."""
    return "files" if num_files >= num_pipelines else "examples"


def list_files(files: list[str], *, pipelines: int, index: int, shuffle: bool, seed: int) -> tf.data.Dataset:
    """This pipeline's files: sorted, sharded by file when there are enough, then shuffled.

    Sharding happens before the shuffle so the split between pipelines never depends on it;
    the shuffle is seeded so every epoch's file order is reproducible.
    """
    ds = tf.data.Dataset.from_tensor_slices(sorted(files))
    if pipelines > 1 and shard_plan(len(files), pipelines) == "files":
        ds = ds.shard(pipelines, index)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    return ds


def interleave(
    files: tf.data.Dataset, read: Callable[[tf.Tensor], tf.data.Dataset], *, options: PipelineOptions, ordered: bool
) -> tf.data.Dataset:
    """Records of all files, taken round-robin from ``cycle_length`` open files.

    The switch turns on parallel reads; off, the same files are read in the same round-robin
    order by one thread, so a deterministic run gives the same order either way.
    """
    calls = _calls(options.read_parallelism) if options.interleave else None
    return files.interleave(
        read,
        cycle_length=options.cycle_length,
        block_length=options.block_length,
        num_parallel_calls=calls,
        deterministic=_det(calls, ordered),
    )


def _det(calls: int | None, ordered: bool) -> bool | None:
    """tf.data's ``deterministic`` argument: only meaningful with parallel calls."""
    return (True if ordered else None) if calls is not None else None


def shard_examples(ds: tf.data.Dataset, *, pipelines: int, index: int) -> tf.data.Dataset:
    """Every ``pipelines``-th record from ``index``: for fewer files than input pipelines."""
    return ds.shard(pipelines, index)


def parse(
    ds: tf.data.Dataset,
    fn: Callable[[tf.Tensor], Example],
    *,
    options: PipelineOptions,
    ordered: bool,
    batched: bool = False,
) -> tf.data.Dataset:
    """Parsed examples. Vectorized: batch ``parse_batch`` records, parse once, unbatch.

    Without vectorization each record is parsed alone through the same batched function
    (a batch of one), so both switches run the same parsing code. ``batched``: the reader
    already yields batches of records (vectorized only), which are parsed as they come.
    """
    calls = _calls(options.map_parallelism)
    if options.vectorize:
        if not batched:
            ds = ds.batch(options.parse_batch)
        ds = ds.map(fn, num_parallel_calls=calls, deterministic=_det(calls, ordered))
        return ds.unbatch()
    return ds.map(one_at_a_time(fn), num_parallel_calls=calls, deterministic=_det(calls, ordered))


def one_at_a_time(fn: Callable[[tf.Tensor], Example]) -> Callable[[tf.Tensor], Example]:
    """A batched parse applied to one record: a batch of one in, the example out."""
    return lambda record: tf.nest.map_structure(lambda t: t[0], fn(tf.nest.map_structure(lambda r: r[None], record)))


def cache(ds: tf.data.Dataset, *, options: PipelineOptions) -> tf.data.Dataset:
    """Keep parsed examples after the first epoch, in memory or in ``cache_path`` files (a URL too)."""
    if options.cache and options.cache_path:
        storage.register(options.cache_path)
    return ds.cache(options.cache_path) if options.cache else ds


def shuffle(ds: tf.data.Dataset, *, buffer: int, seed: int) -> tf.data.Dataset:
    """Shuffle examples with a seeded buffer, reshuffled every epoch."""
    return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True) if buffer > 1 else ds


def augment(
    ds: tf.data.Dataset, fn: Callable[[Example, tf.Tensor], Example], *, options: PipelineOptions, seed: int
) -> tf.data.Dataset:
    """Per-example augmentation with stateless randomness keyed by (seed, position in stream).

    The key depends on the element's position, not on which thread runs it, so parallel
    augmentation gives the same values as sequential augmentation, and a restored iterator
    continues with the same randomness.
    """
    return augment_keyed(ds.enumerate(), fn, options=options, seed=seed)


def augment_keyed(
    keyed: tf.data.Dataset, fn: Callable[[Example, tf.Tensor], Example], *, options: PipelineOptions, seed: int
) -> tf.data.Dataset:
    """Augment ``(key, example)`` pairs with randomness keyed by (seed, key); yields the examples.

    :func:`augment` keys by the position in this stream; a position-addressed pipeline
    (``ingest.positioned``) by the example's global position, the same on every topology.
    """
    calls = _calls(options.map_parallelism)
    return keyed.map(
        lambda i, ex: fn(ex, tf.stack([tf.constant(seed, tf.int64), i])),
        num_parallel_calls=calls,
        deterministic=_det(calls, bool(options.deterministic)),
    )


def memory_cache_fits(dataset, split: str, examples: int, options: PipelineOptions) -> bool:
    """Whether ``examples`` parsed examples of ``dataset`` fit ``pipeline.cache_budget_mb`` (warns when not)."""
    size_mb = examples * dataset.example_bytes() / 2**20
    if size_mb <= options.cache_budget_mb:
        return True
    log.warning(
        "not caching %s/%s: about %.0f MiB parsed exceeds pipeline.cache_budget_mb=%g; "
        "set pipeline.cache_path to cache on disk",
        dataset.name,
        split,
        size_mb,
        options.cache_budget_mb,
    )
    return False


def per_example(ds: tf.data.Dataset, fn: Callable[[Example], Example], *, options: PipelineOptions) -> tf.data.Dataset:
    """Per-example work done for every split (e.g. normalization)."""
    calls = _calls(options.map_parallelism)
    return ds.map(fn, num_parallel_calls=calls, deterministic=_det(calls, bool(options.deterministic)))


def batch(ds: tf.data.Dataset, *, size: int, drop_remainder: bool) -> tf.data.Dataset:
    """Batches of ``size`` examples; ``drop_remainder`` keeps shapes static (TPU, replicas)."""
    return ds.batch(size, drop_remainder=drop_remainder)


def with_options(ds: tf.data.Dataset, *, options: PipelineOptions) -> tf.data.Dataset:
    """The one place threading, determinism and autotune budgets are set."""
    opts = tf.data.Options()
    opts.deterministic = bool(options.deterministic)
    if options.private_threadpool:
        opts.threading.private_threadpool_size = options.private_threadpool
    opts.autotune.enabled = options.preset != "naive"
    if options.autotune_cpu_budget:
        opts.autotune.cpu_budget = options.autotune_cpu_budget
    if options.autotune_ram_budget_mb:
        opts.autotune.ram_budget = options.autotune_ram_budget_mb * 2**20
    # tf.data rewrites that would turn on parallelism behind a switch's back stay off in naive.
    opts.experimental_optimization.map_parallelization = options.preset != "naive"
    opts.experimental_optimization.inject_prefetch = options.preset != "naive"
    # map+batch fusion runs the last map a batch ahead on a background thread: hidden prefetch.
    opts.experimental_optimization.map_and_batch_fusion = options.preset != "naive"
    # Fusing consecutive maps (augment + preprocess) saves one hand-off per example; what it is
    # worth is the ablation row "optimized, map fusion off" (benchmarks/README.md).
    opts.experimental_optimization.map_fusion = bool(options.map_fusion)
    opts.experimental_optimization.parallel_batch = options.preset != "naive"
    return ds.with_options(opts)


def prefetch(ds: tf.data.Dataset, *, options: PipelineOptions) -> tf.data.Dataset:
    """Overlap producing batch n+1 with consuming batch n (host), optionally onto a GPU."""
    if not options.prefetch:
        return ds
    buffer = tf.data.AUTOTUNE if options.prefetch_buffer == AUTOTUNE else options.prefetch_buffer
    ds = ds.prefetch(buffer)
    if options.device_prefetch:
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            ds = ds.apply(tf.data.experimental.prefetch_to_device(gpus[0].name))
        else:
            log.warning("pipeline.device_prefetch=true but there is no GPU; prefetching on the host only")
    return ds
