"""``profile(config)``: the orchestrator behind ``make profile``.

Host, one process. Builds the run's pipeline, model and train step exactly as ``make train``
does (``training.controller``), measures the three scenarios and every pipeline prefix,
captures a short profiler trace, diagnoses, and writes ``runs/<RUN>/profile/``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

import psutil
import tensorflow as tf

from ingest.built import Built
from ingest.dataset import Dataset
from ingest.runconfig import RunConfig
from profiles import report, scenarios, trace
from profiles.diagnose import LOOP, Diagnosis, diagnose
from profiles.measurements import Measurements, Setup, StageRate
from stoker.errors import StokerError
from strategies import make_backend
from training.assembly import assemble

log = logging.getLogger(__name__)
SINGLE_PROCESS = ("one_device", "mirrored", "pipeline", "tpu")


@dataclasses.dataclass(frozen=True)
class Profile:
    """What one profile run measured and concluded, and where it wrote it."""

    measurements: Measurements
    diagnosis: Diagnosis
    directory: Path
    tensorboard: trace.TensorBoardVerdict | None  # None when no trace was taken or it was unreadable


def profile(config: RunConfig) -> Profile:
    """Measure, diagnose and report for ``config`` (the same config ``make train`` would run)."""
    if config.strategy.name not in SINGLE_PROCESS:
        raise StokerError(
            f"make profile measures one process; STRATEGY={config.strategy.name} launches several. "
            f"Profile with STRATEGY=mirrored (or one_device) on one host"
        )
    if config.train.steps_per_loop > 1 and config.train.deterministic:
        raise StokerError(
            f"make profile times each step's input wait inside loops of STEPS_PER_LOOP={config.train.steps_per_loop}, "
            "which op determinism (DETERMINISTIC=1, train.deterministic) forbids: profile without it"
        )
    backend = make_backend(config.strategy)
    try:
        return _profile(config, backend)
    finally:
        backend.shutdown()


def _profile(config: RunConfig, backend: Any) -> Profile:
    run = assemble(config, backend)  # what make train builds, checks included
    config, dataset, built, trainer = run.config, run.dataset, run.built, run.trainer  # PIPELINE=auto applied
    p = config.profile
    fk, lk = dataset.feature_key, dataset.label_key

    def step(batch: dict[str, tf.Tensor]) -> float:
        """Host: one real train step; returns when it finished (the loss is read back)."""
        return float(trainer.train_step((batch[fk], batch[lk]))[0])

    n = dataset.num_examples(config.data.train_split)
    epoch = math.ceil(n / built.batch_size) if built.cached and n else 0
    plan = scenarios.Plan(
        steps=p.steps, reps=p.reps, warmup_steps=p.warmup_steps, stage_batches=p.stage_batches, epoch_batches=epoch
    )
    log.info("input-only: the pipeline alone (%d steps)", p.steps)
    inp = scenarios.input_only(built.dataset, plan)
    iterator = iter(built.dataset)
    log.info(
        "end-to-end (real steps), then compute-only (one cached batch repeated) (%d steps each)",
        plan.reps * plan.per_rep,
    )
    loop_steps = config.train.steps_per_loop

    def loop(it: Any, n: int) -> Any:
        return trainer.train_loop(it, n, fk, lk)

    if loop_steps > 1:  # as make train runs it: the batches are taken inside each compiled loop
        times = scenarios.compute_and_end_to_end_looped(loop, iterator, plan, loop_steps)
    else:  # and compute-only in loops of LOOP steps too: what each step costs the host in Python
        times = scenarios.compute_and_end_to_end(step, iterator, plan, loop, LOOP)
        loop_steps = LOOP
    out_dir = config.run_dir / "profile"
    tb = _trace(step, iterator, p.trace_steps, out_dir)
    rates = _prefix_rates(config, dataset, built, plan)
    m = Measurements(
        setup=_setup(config, dataset, built),
        input_examples_per_s=inp.median,
        input_first_batch_s=inp.first_s,
        input_build_s=built.build_s,
        compute_step_s=times.compute_only_s,
        loop_step_s=times.loop_step_s,
        loop_steps=loop_steps,
        handoff_s=times.handoff_s,
        wait_s=scenarios.windowed_mean(times.waits, p.reps),
        compute_s=scenarios.windowed_mean(times.computes, p.reps),
        step_waits=times.waits,
        step_computes=times.computes,
        stages=tuple(rates),
    )
    d = diagnose(m)
    auto = dict(run.auto.as_dict(), line=run.auto.line()) if run.auto else None
    report.write(out_dir, m, d, config=config, tensorboard=tb, auto=auto)
    trace.write_summaries(
        out_dir,
        (out_dir / "report.md").read_text(),
        {
            "input_examples_per_s": m.input_examples_per_s,
            "compute_examples_per_s": m.compute_examples_per_s,
            "input_wait_fraction": d.input_fraction,
        },
    )
    return Profile(m, d, out_dir, tb)


def _prefix_rates(config: RunConfig, dataset: Dataset, built: Built, plan: scenarios.Plan) -> list[StageRate]:
    """Each prefix of the tf.data stage order; none for DALI, whose pipeline is one fused graph."""
    if config.pipeline.engine == "dali":
        log.info("prefixes: skipped for PIPELINE=dali (DALI reads, decodes and augments in one pipeline)")
        return []
    log.info("prefixes: each stage added in turn (%d batches x %d windows each)", plan.stage_batches, plan.reps)
    found = scenarios.prefixes(
        dataset,
        config.data.train_split,
        config.pipeline,
        built,
        seed=config.data.seed,
        shuffle_buffer=config.data.shuffle_buffer,
    )
    return scenarios.time_prefixes(found, plan)


def _trace(step: Any, iterator: Any, steps: int, out_dir: Path) -> trace.TensorBoardVerdict | None:
    if not steps:
        return None
    log.info("trace: %d annotated steps into %s", steps, out_dir)
    xplane = trace.capture(step, iterator, steps=steps, logdir=out_dir)
    try:
        return trace.tensorboard_verdict(xplane)
    except (trace.TraceError, ValueError, KeyError, IndexError) as err:  # the report stands without it
        log.warning("TensorBoard's profile plugin could not analyse %s: %s", xplane, err)
        return None


def _setup(config: RunConfig, dataset: Dataset, built: Built) -> Setup:
    o = config.pipeline
    n = dataset.num_examples(config.data.train_split)
    spec = dataset.element_spec.get(dataset.feature_key)
    return Setup(
        dataset=dataset.name,
        preset=o.preset,
        batch_size=config.train.batch_size,
        files=len(built.files),
        interleave=bool(o.interleave),
        cycle_length=o.cycle_length,
        read_parallelism=int(o.read_parallelism),
        map_parallelism=int(o.map_parallelism),
        vectorize=bool(o.vectorize),
        cache=built.cached,
        prefetch=bool(o.prefetch),
        data_service=o.data_service,
        split_examples=n,
        shuffle_buffer=config.data.shuffle_buffer if o.shuffle else 0,
        parsed_split_mb=n * dataset.example_bytes() / 2**20 if n else None,
        available_ram_mb=psutil.virtual_memory().available / 2**20,
        cache_budget_mb=o.cache_budget_mb,
        decodes_images=_decodes_images(dataset, spec),
        has_augment=dataset.has_augment,
        cpu_count=len(os.sched_getaffinity(0)),
        cache_path=o.cache_path,
        steps_per_loop=config.train.steps_per_loop,
        run_examples=config.train.steps * config.train.batch_size if config.train.steps else config.train.epochs * n,
    )


def _decodes_images(dataset: Dataset, spec: tf.TensorSpec | None) -> bool:
    """Images parsed from files (uint8, height x width x channels): parse decodes them."""
    return spec is not None and spec.dtype == tf.uint8 and spec.shape.rank == 3 and dataset.format != "memory"
