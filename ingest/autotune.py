"""``PIPELINE=auto``: the pipeline's knobs chosen on this machine, before training, and kept.

tf.data's AUTOTUNE sizes thread counts and buffers while a pipeline runs; it never decides where
to cache, how many records to parse per call or how big a thread pool to give the pipeline.
:func:`resolve` decides each knob of ``ingest.options.TUNED`` the config leaves unset:

- **where to cache**, from sizes and free memory: the parsed split in memory when it fits
  ``min(pipeline.cache_budget_mb, half the free RAM)``; else, for a position-addressed pipeline,
  its serialized records (parsed every epoch, a fraction of the size); else nothing. A run that
  reads the split once caches nothing (a cache pays from the second pass).
- **per-stage parallelism, records per parse call, prefetch depth, thread pool**, by measuring:
  coordinate descent from ``optimized``, each candidate the run's own training pipeline (as
  ``make train`` builds it) timed for the same batches after the same warm-up: ``WARM_S`` seconds
  untimed (they read whatever the buffers filled while the pipeline was built, and give tf.data's
  AUTOTUNE time to settle: timed at once, a fixed thread count beat AUTOTUNE in the tuner and
  lost to it in the benchmark), then the median of ``TIMED`` windows. The start is measured
  twice; a candidate replaces the incumbent only when faster by more than those two differ (and
  by at least ``MIN_GAIN``), so noise does not pick settings. A choice that differs from the
  start is then confirmed against it, the two measured in turns (start, then choice):
  it is kept only when it still wins by that margin, so a lucky window early on cannot leave a
  run slower than ``optimized``.
- **bounded**: ``pipeline.auto_budget_s`` seconds, by default the smaller of ``CAP_S`` and
  ``RUN_SHARE`` of the run's input time (its examples at the measured ``optimized`` rate, a lower
  bound of the run's time); knobs not reached keep ``optimized``'s value, and the log says so.
  The first measurement (building the pipeline once and one window) is always taken: it sizes
  the budget.

The choice is saved under ``<data_dir>/.stoker-auto/``, keyed by the dataset's files (or its
in-memory definition), the batch, the knobs tuned and this host (cores, RAM, TensorFlow), and a
later run with the same key reuses it without measuring. Host, once per process, before the
pipeline is built. A launcher resolves it before its workers start and hands its choice to them
in ``HANDOFF`` (:func:`handoff`), so every worker builds the launcher's pipeline even when the
budget left knobs untried (a partial choice is not saved: the next run measures again).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import tensorflow as tf

from ingest import pipeline, positioned
from ingest.built import Position
from ingest.dataset import Dataset
from ingest.options import AUTOTUNE, PipelineOptions
from stoker import storage
from stoker.files import write_json_atomic

log = logging.getLogger("stoker")

CAP_S = 30.0  # tuning never takes longer than this
RUN_SHARE = 0.10  # nor more than this share of the run's input time
MIN_GAIN = 0.05  # a candidate must beat the incumbent by this much (and by more than the A/A spread)
WINDOW_S = 0.25  # seconds per timed window, sized from the first measurement
WARM_S = 1.0  # seconds read untimed before the timed windows of every measurement
TIMED = 3  # timed windows per measurement (their median)
HANDOFF = "STOKER_AUTO_CHOICE"  # environment: the launcher's choice, as JSON, for the workers it starts
CONFIRM = 1  # rounds of (start, choice) measured in turns before a choice is kept (two measurements each)
VERSION = 3  # bump when what is tuned or how changes: older saved choices are then ignored


@dataclasses.dataclass(frozen=True)
class Choice:
    """What ``PIPELINE=auto`` chose, why, and what it measured."""

    settings: dict[str, Any]  # knob -> value for the pipeline section
    reasons: dict[str, str]  # knob -> why (measured figures or the sizes that decided)
    examples_per_s: float  # the chosen pipeline, measured (0 when nothing was measured)
    baseline_examples_per_s: float  # optimized, measured (0 when nothing was measured)
    tuning_s: float  # seconds spent choosing (0 when reused)
    budget_s: float  # seconds it was allowed
    key: str  # what the saved choice is filed under
    reused: bool = False  # read from a previous run's saved choice
    untried: tuple[str, ...] = ()  # knobs the budget did not reach (left at optimized's value)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        """One line for the log and the profile report."""
        chosen = ", ".join(f"{k}={_show(v)}" for k, v in sorted(self.settings.items()))
        measured = [k for k in self.settings if k not in ("cache", "cache_form")]
        if self.reused:
            how = "reused from an earlier run on this data and host"
        elif measured:
            gain = self.examples_per_s / self.baseline_examples_per_s
            how = (
                f"measured in {self.tuning_s:.1f} s of {self.budget_s:.0f} allowed: {self.examples_per_s:,.0f} "
                f"examples/s against optimized's {self.baseline_examples_per_s:,.0f} ({gain:.2f}x)"
            )
        else:
            how = (
                f"one measurement, {self.baseline_examples_per_s:,.0f} examples/s, in {self.tuning_s:.1f} s: the "
                f"{self.budget_s:.1f} s allowed (pipeline.auto_budget_s) leave no time to try more"
            )
        left = f"; not reached: {', '.join(self.untried)}" if self.untried else ""
        return f"PIPELINE=auto chose {chosen} ({how}){left}"


def _show(value: Any) -> str:
    return "AUTOTUNE" if value == AUTOTUNE else str(value).lower() if isinstance(value, bool) else str(value)


@dataclasses.dataclass(frozen=True)
class Target:
    """What is tuned for: the run's training pipeline on one worker."""

    dataset: Dataset
    split: str
    batch_size: int
    seed: int
    shuffle_buffer: int
    run_examples: int  # examples the run will read (0: unknown)
    data_dir: str


def resolve(
    options: PipelineOptions, target: Target, *, budget_s: float | None = None
) -> tuple[PipelineOptions, Choice | None]:
    """``options`` with ``PIPELINE=auto``'s choices applied (unchanged, and None, for other presets)."""
    if options.preset != "auto" or not options.auto_tunes:
        return options, None
    key = _key(options, target)
    path = storage.location(target.data_dir) / ".stoker-auto" / f"{key}.json"
    saved = _handed(key) or _load(path)
    if saved is not None:
        choice = dataclasses.replace(saved, reused=True, tuning_s=0.0)
    else:
        choice = _tune(options, target, key, budget_s if budget_s is not None else options.auto_budget_s or None)
        if not choice.untried:  # a partial choice is measured again next time, with more budget
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, json.dumps(choice.as_dict(), indent=2, sort_keys=True))
    log.info("%s", choice.line())
    for knob, why in sorted(choice.reasons.items()):
        log.info("  %s: %s", knob, why)
    return dataclasses.replace(options, **choice.settings), choice


def _key(options: PipelineOptions, t: Target) -> str:
    """The dataset's content, the request, the knobs left to tune and this host, hashed."""
    ds = t.dataset
    root = getattr(ds, "root", None)
    info = storage.location(root) / "dataset_info.json" if root else None
    content = info.read_text() if info is not None and info.is_file() else repr(ds.options)
    fixed = {k: v for k, v in dataclasses.asdict(options).items() if k not in options.auto_tunes}
    host = (platform.node(), len(os.sched_getaffinity(0)), psutil.virtual_memory().total // 2**30, tf.__version__)
    blob = json.dumps([VERSION, ds.name, t.split, content, t.batch_size, t.shuffle_buffer, fixed, host], default=str)
    return f"{ds.name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def handoff(choice: Choice | None) -> dict[str, str]:
    """The environment a launcher adds for its workers: its choice, whole or partial ({} for none)."""
    return {HANDOFF: json.dumps(choice.as_dict(), sort_keys=True)} if choice is not None else {}


def _handed(key: str) -> Choice | None:
    """The launcher's choice, when this process was started by one for the same key."""
    choice = _parse(os.environ.get(HANDOFF, ""))
    return choice if choice is not None and choice.key == key else None


def _load(path: Path | storage.Url) -> Choice | None:
    if not path.is_file():
        return None
    try:
        return _parse(path.read_text())
    except OSError:  # unreadable: measure again
        return None


def _parse(text: str) -> Choice | None:
    try:
        raw = json.loads(text)
        return Choice(**{k: tuple(v) if k == "untried" else v for k, v in raw.items()})
    except (ValueError, TypeError):  # empty, or from another version: measure again
        return None


def _tune(options: PipelineOptions, t: Target, key: str, budget_s: float | None) -> Choice:
    start = time.perf_counter()
    tunes = set(options.auto_tunes)
    settings: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    order, why_not = pipeline.training_order(t.dataset, t.split, options, seed=t.seed, shuffle_buffer=t.shuffle_buffer)
    if tunes & {"cache", "cache_form"}:
        settings, reasons = _cache_choice(options, t, addressed=order is not None)
        settings = {k: v for k, v in settings.items() if k in tunes}
    current = dataclasses.replace(options, **settings)
    candidates = _candidates(current, tunes)
    with positioned.tables_reused():
        measure = _meter(t, order)
        base = measure(current)  # always taken: it sizes the budget
        run_s = t.run_examples / base.rate if t.run_examples else CAP_S / RUN_SHARE
        budget = budget_s if budget_s is not None else min(CAP_S, RUN_SHARE * run_s)
        untried: list[str] = []
        # later builds share the in-memory table the first one filled: they cost the rest
        best_rate, noise, per = base.rate, MIN_GAIN, base.cost_s - base.build_s + base.build_s * 0.05
        if time.perf_counter() - start + per <= budget:
            again = measure(current)  # the A/A repeat: how far one setting's two measurements differ
            best_rate = max(base.rate, again.rate)
            noise = abs(base.rate - again.rate) / best_rate
            per = again.cost_s  # later builds reuse the in-memory table
        else:
            untried = [knob for knob, _ in candidates]
            candidates = []
        baseline, start_options = best_rate, current
        reserve = per * 2 * CONFIRM  # kept for confirming a choice against the start
        for knob, values in candidates:
            if time.perf_counter() - start + per * len(values) + reserve > budget:
                untried.append(knob)
                continue
            rates = {getattr(current, knob): best_rate}
            for value in values:
                rates[value] = measure(dataclasses.replace(current, **{knob: value})).rate
            winner = max(rates, key=rates.get)
            incumbent = getattr(current, knob)
            if winner != incumbent and rates[winner] > best_rate * (1 + max(MIN_GAIN, noise)):
                current = dataclasses.replace(current, **{knob: winner})
                best_rate = rates[winner]
            settings[knob] = getattr(current, knob)
            reasons[knob] = ", ".join(f"{_show(v)}: {r:,.0f}/s" for v, r in rates.items()) + (
                f" (kept {_show(incumbent)}: within noise {max(MIN_GAIN, noise):.0%})"
                if getattr(current, knob) == incumbent
                else ""
            )
        if current != start_options:
            current, best_rate, baseline = _confirm(measure, start_options, current, max(MIN_GAIN, noise), reasons)
            settings.update({k: getattr(current, k) for k in settings if k not in ("cache", "cache_form")})
    if why_not:
        reasons["input"] = f"measured on the iterator-state pipeline ({why_not})"
    return Choice(
        settings=settings,
        reasons=reasons,
        examples_per_s=best_rate,
        baseline_examples_per_s=baseline,
        tuning_s=time.perf_counter() - start,
        budget_s=budget,
        key=key,
        untried=tuple(untried),
    )


def _confirm(
    measure: Callable[[PipelineOptions], _Measured],
    start: PipelineOptions,
    chosen: PipelineOptions,
    margin: float,
    reasons: dict[str, str],
) -> tuple[PipelineOptions, float, float]:
    """(options kept, their rate, the start's rate): ``chosen`` and ``start`` measured in turns,
    ``CONFIRM`` times each; ``chosen`` is kept only when its median beats the start's by ``margin``."""
    before, after = [], []
    for _ in range(CONFIRM):
        before.append(measure(start).rate)
        after.append(measure(chosen).rate)
    was, now = statistics.median(before), statistics.median(after)
    kept = now > was * (1 + margin)
    reasons["confirmed"] = (
        f"measured in turns with the start: {now:,.0f}/s against {was:,.0f}/s ({now / was:.2f}x); "
        + ("kept" if kept else f"within {margin:.0%}: the start's values kept")
    )
    return (chosen, now, was) if kept else (start, was, was)


def _cache_choice(options: PipelineOptions, t: Target, *, addressed: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """Where to cache, from the split's parsed and encoded sizes, free RAM and passes in the run."""
    ds, split = t.dataset, t.split
    n = ds.num_examples(split) or 0
    decoded_mb = n * ds.example_bytes() / 2**20
    files = [] if ds.in_memory(split) is not None else ds.files(split)
    encoded_mb = sum(storage.size(f) for f in files) / 2**20 if files else decoded_mb
    room = min(options.cache_budget_mb, psutil.virtual_memory().available / 2**21)
    passes = t.run_examples / n if n and t.run_examples else 2.0
    sizes = f"parsed split {decoded_mb:,.0f} MiB, records {encoded_mb:,.0f} MiB, room {room:,.0f} MiB"
    if options.cache_path:
        return {"cache": True}, {"cache": f"pipeline.cache_path={options.cache_path} is set: caching there"}
    if passes <= 1:
        return {"cache": False}, {"cache": f"the run reads the split {passes:.2f} times: a cache would not be read"}
    if decoded_mb <= room:
        why = f"{sizes}: the parsed split fits, parsed once and gathered by index"
        return {"cache": True, "cache_form": "decoded"}, {"cache": why}
    if addressed and encoded_mb <= room:
        why = f"{sizes}: the parsed split does not fit, its records do (parsed every epoch)"
        return {"cache": True, "cache_form": "encoded"}, {"cache": why}
    return {"cache": False}, {"cache": f"{sizes}: neither fits; streaming from files"}


def _candidates(options: PipelineOptions, tunes: set[str]) -> list[tuple[str, list[Any]]]:
    """(knob, values other than the current one), most likely to pay first."""
    cores = len(os.sched_getaffinity(0))
    grid: list[tuple[str, list[Any]]] = [
        ("map_parallelism", [AUTOTUNE, 1, cores, 2 * cores]),  # 1: small maps can lose more to hand-offs than they gain
        ("parse_batch", [64, 256, 1024] if options.vectorize else []),
        ("prefetch_buffer", [AUTOTUNE, 2, 8] if options.prefetch else []),
        ("private_threadpool", [0, cores + 1]),
    ]
    out = [(k, [v for v in dict.fromkeys(vs) if v != getattr(options, k)]) for k, vs in grid if k in tunes]
    return [(k, vs) for k, vs in out if vs]


@dataclasses.dataclass(frozen=True)
class _Measured:
    rate: float  # examples per second over the timed window
    cost_s: float  # wall seconds the whole measurement took (build, warm-up, window)
    build_s: float  # of which building the pipeline (an in-memory table is filled then)


def _meter(t: Target, order) -> Callable[[PipelineOptions], _Measured]:
    """A function timing the run's training pipeline under given options: same warm-up, same batches."""
    sized: dict[str, int] = {}

    def measure(options: PipelineOptions) -> _Measured:
        began = time.perf_counter()
        built = pipeline.build(
            t.dataset,
            t.split,
            options,
            batch_size=t.batch_size,
            training=True,
            seed=t.seed,
            shuffle_buffer=t.shuffle_buffer,
            position=Position(seed=t.seed) if order is not None else None,
            order=order,
        )
        it = iter(built.dataset)
        for _ in range(3):  # warm-up: threads started, first buffers filled
            next(it)
        if "batches" not in sized:  # the first measurement sizes every later window
            probe = time.perf_counter()
            for _ in range(5):
                next(it)
            per_batch = (time.perf_counter() - probe) / 5
            sized["batches"] = max(5, min(500, round(WINDOW_S / max(per_batch, 1e-6))))
        batches = sized["batches"]
        warm = time.perf_counter()
        while time.perf_counter() - warm < WARM_S:
            next(it)
        windows = []
        for _ in range(TIMED):
            timed = time.perf_counter()
            for _ in range(batches):
                next(it)
            windows.append(batches * built.batch_size / (time.perf_counter() - timed))
        return _Measured(statistics.median(windows), time.perf_counter() - began, built.build_s)

    return measure
