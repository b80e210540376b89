"""The tf.data engine: the records of one input pipeline, then one ordered list of stages.

Order (fixed, written here only): list files, shard (files when files >= input pipelines, else
examples with a warning), interleave, then :data:`STAGES`: parse (batched), cache, shuffle,
repeat, augment, preprocess, batch, options; with ``pipeline.vectorize``, a dataset whose
preprocess works on batches (``Dataset.preprocesses_batches``) preprocesses after ``batch``
instead, once per batch.
:func:`build` runs the whole list; the profiler (``profiles.scenarios``) cuts the same list after
each stage. The facade (``ingest.pipeline``)
validates the request and adds the service and prefetch around what this returns. Runs on the
host at build time; the result runs in tf.data.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import psutil
import tensorflow as tf

from ingest import integrity, positioned, stages
from ingest.built import Built, Request
from ingest.dataset import Dataset
from ingest.options import PipelineOptions
from stoker.errors import DataError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """What every stage needs to know, decided once per build."""

    dataset: Dataset
    options: PipelineOptions
    request: Request
    cached: bool  # the cache stage runs (memory within budget, or cache_path)
    ordered: bool  # interleave and parallel maps keep element order
    batched: bool  # records arrive in blocks of parse_batch (Dataset.read_batches)

    @property
    def shuffles(self) -> bool:
        return self.request.training and bool(self.options.shuffle)

    @property
    def batch_wise(self) -> bool:
        """Preprocess whole batches, after ``batch`` (``pipeline.vectorize`` and a dataset whose
        preprocess works on batches: ``Dataset.preprocesses_batches``)."""
        return bool(self.options.vectorize) and self.dataset.preprocesses_batches()


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the pipeline; ``when`` says whether this plan runs it."""

    name: str
    apply: Callable[[tf.data.Dataset, Plan], tf.data.Dataset]
    when: Callable[[Plan], bool] = lambda plan: True
    profiled: bool = True  # the profiler times the pipeline cut after this stage


def _cache(ds: tf.data.Dataset, p: Plan) -> tf.data.Dataset:
    return stages.cache(ds, options=dataclasses.replace(p.options, cache=True))


STAGES: tuple[Stage, ...] = (
    Stage(
        "parse",
        lambda ds, p: stages.parse(ds, p.dataset.parse, options=p.options, ordered=p.ordered, batched=p.batched),
    ),
    Stage("cache", _cache, when=lambda p: p.cached),
    Stage(
        "shuffle",
        lambda ds, p: stages.shuffle(ds, buffer=p.request.shuffle_buffer, seed=p.request.seed),
        when=lambda p: p.shuffles,
    ),
    Stage("repeat", lambda ds, p: ds.repeat(), when=lambda p: p.request.repeat, profiled=False),
    Stage(
        "augment",
        lambda ds, p: stages.augment(ds, p.dataset.augment, options=p.options, seed=p.request.seed + p.request.index),
        when=lambda p: p.request.training and p.dataset.has_augment,
    ),
    Stage(
        "preprocess",
        lambda ds, p: stages.per_example(ds, p.dataset.preprocess, options=p.options),
        when=lambda p: not p.batch_wise,
    ),
    Stage(
        "batch",
        lambda ds, p: stages.batch(ds, size=p.request.batch_size, drop_remainder=p.request.training),
    ),
    Stage(
        "preprocess batches",
        lambda ds, p: stages.per_example(ds, p.dataset.preprocess, options=p.options),
        when=lambda p: p.batch_wise,
    ),
    Stage("options", lambda ds, p: stages.with_options(ds, options=p.options), profiled=False),
)


def run_stages(ds: tf.data.Dataset, plan: Plan, until: str | None = None) -> tf.data.Dataset:
    """Apply :data:`STAGES` in order (those ``plan`` runs), stopping after ``until`` when given."""
    for stage in STAGES:
        if stage.when(plan):
            ds = stage.apply(ds, plan)
        if stage.name == until:
            break
    return ds


def build(dataset: Dataset, request: Request, options: PipelineOptions) -> Built:
    """The tf.data pipeline of one input pipeline, up to (not including) service and prefetch.

    A request with a position builds the position-addressed training stream (``ingest.positioned``).
    """
    if request.position is not None:
        return positioned.build(dataset, request, options)
    if options.cache and options.cache_form == "encoded" and request.training:
        raise DataError(
            "pipeline.cache_form=encoded gathers records by input position; this pipeline keeps "
            "TensorFlow's iterator state instead (pipeline.iterator_checkpoint, DATA_SERVICE=, skip_corrupt "
            "or cache_path): use pipeline.cache_form=decoded"
        )
    if request.training and options.shuffle:
        _check_shuffle_budget(dataset, request.shuffle_buffer)
    pipelines, index = request.pipelines, request.index
    report = integrity.CorruptionReport(limit=options.max_corrupt)
    memory = dataset.in_memory(request.split)
    batched = False
    if memory is not None:
        files: list[str] = []
        shard_by = "examples" if pipelines > 1 else "none"
        records = memory.shard(pipelines, index) if pipelines > 1 else memory
        ordered = True
    else:
        files = dataset.files(request.split)
        shard_by = stages.shard_plan(len(files), pipelines) if pipelines > 1 else "none"
        # Sharding examples needs the same record order in every pipeline: interleave in order.
        ordered = shard_by == "examples" or bool(options.deterministic)
        if shard_by == "examples":
            log.warning(
                "%s/%s has %d files for %d input pipelines: sharding by example, so every pipeline "
                "reads every file; write at least %d shards (SHARDS=) to shard by file",
                dataset.name,
                request.split,
                len(files),
                pipelines,
                pipelines,
            )
        # A reader that produces blocks of rows anyway hands them to the vectorized parse whole.
        batched = bool(options.vectorize) and dataset.reads_batches and shard_by != "examples"
        records = _read(dataset, files, options, report, request, ordered=ordered, batched=batched)
        if shard_by == "examples":
            records = stages.shard_examples(records, pipelines=pipelines, index=index)
    plan = Plan(
        dataset=dataset,
        options=options,
        request=request,
        cached=_cache_fits(dataset, request.split, options),
        ordered=ordered,
        batched=batched,
    )
    ds = run_stages(records, plan)
    return Built(ds, tuple(files), shard_by, request.batch_size, plan.cached, report, batched, "tfdata")


def file_reader(dataset: Dataset, options: PipelineOptions, batched: bool) -> Callable[[tf.Tensor], tf.data.Dataset]:
    """The per-file read ``build`` interleaves: blocks of ``parse_batch`` records when ``batched``."""
    if batched:
        return lambda path: dataset.read_batches(path, options.parse_batch)
    return dataset.read


def interleaved(dataset: Dataset, files: list[str], plan: Plan, *, pipelines: int = 1, index: int = 0):
    """The files' records through the interleave stage (file order shuffled when the plan shuffles)."""
    names = stages.list_files(files, pipelines=pipelines, index=index, shuffle=plan.shuffles, seed=plan.request.seed)
    return stages.interleave(
        names, file_reader(dataset, plan.options, plan.batched), options=plan.options, ordered=plan.ordered
    )


def _read(
    dataset: Dataset,
    files: list[str],
    options: PipelineOptions,
    report: integrity.CorruptionReport,
    request: Request,
    *,
    ordered: bool,
    batched: bool,
) -> tf.data.Dataset:
    """Records of this pipeline's files; with ``skip_corrupt``, damaged files give only intact records.

    ``batched``: elements are batches of up to ``options.parse_batch`` records (``read_batches``).
    """
    pipelines, index = request.pipelines, request.index
    damaged: list[str] = []
    if options.skip_corrupt and dataset.format == "tfrecord":
        damaged = integrity.find_damage(dataset, files, report)
    elif options.verify_framing and dataset.format == "tfrecord":
        integrity.verify_framing(dataset, files)
    clean = [f for f in files if f not in damaged]
    per_pipeline = stages.shard_plan(len(files), pipelines) == "files" and pipelines > 1
    parts = []
    if clean:
        plan = Plan(dataset=dataset, options=options, request=request, cached=False, ordered=ordered, batched=batched)
        parts.append(interleaved(dataset, clean, plan, pipelines=pipelines if per_pipeline else 1, index=index))
    mine = [f for i, f in enumerate(sorted(damaged)) if not per_pipeline or i % pipelines == index]
    for path in mine:
        intact = integrity.read_intact(path, dataset.compression)
        parts.append(intact.batch(options.parse_batch) if batched else intact)
    if not parts:
        raise DataError(f"every file of {dataset.name!r} is damaged: {', '.join(damaged)}; re-run make prepare")
    records = parts[0]
    for part in parts[1:]:
        records = records.concatenate(part)
    return records


def _check_shuffle_budget(dataset: Dataset, buffer: int) -> None:
    need = buffer * dataset.example_bytes()
    have = psutil.virtual_memory().available
    if need > have // 2:
        raise DataError(
            f"data.shuffle_buffer={buffer} holds about {need / 2**30:.1f} GiB of {dataset.name!r} examples, "
            f"more than half of the {have / 2**30:.1f} GiB available; lower data.shuffle_buffer"
        )


def _cache_fits(dataset: Dataset, split: str, options: PipelineOptions) -> bool:
    if not options.cache or options.cache_path:
        return bool(options.cache)
    return stages.memory_cache_fits(dataset, split, dataset.num_examples(split) or 0, options)
