"""From measurements to a verdict, the costliest stage and advice: a pure function.

``diagnose(measurements)`` reads only the :class:`~profiles.measurements.Measurements` value
(no TensorFlow, no clock, no files), so it is tested with made-up numbers. The verdict uses
the classes of TensorBoard's input pipeline analyzer: under 5% of the step time waiting for
input is *not* input-bound, 5-20% *moderately*, 20% or more *highly*.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from profiles.measurements import Measurements, Setup

MODERATE, HIGH = 0.05, 0.20  # TensorBoard's input_pipeline_analyzer thresholds
SECONDARY = 0.25  # a stage with this share of the steady time per example gets advice too
CONTENTION = 1.3  # end-to-end compute this much slower than compute-only: the pipeline steals the model's CPU
VERDICTS = {"not": "not input-bound", "moderately": "moderately input-bound", "highly": "highly input-bound"}
SERVICE = "DATA_SERVICE=grpc://<dispatcher>:5050"
FAST = 3.0  # the pipeline alone this many times faster than the model consumes: no stage holds the step back
LOOP = 20  # STEPS_PER_LOOP proposed for a per-step overhead
STARTUP = 0.10  # start-up (building the pipeline, then its first batch) this share of the run is a finding


@dataclasses.dataclass(frozen=True)
class StageCost:
    """What one stage adds to the time per example, from the difference of two prefixes."""

    name: str
    s_per_example: float  # marginal seconds per example this stage adds (>= 0)
    every_epoch: bool  # False for stages before a warm cache: paid in the first epoch only
    share: float  # of the steady-state time per example (0 for first-epoch-only stages)


@dataclasses.dataclass(frozen=True)
class Advice:
    """One change to try: a setting (``KEY=value`` as on the make line or ``--set``) and why."""

    setting: str
    why: str


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """The verdict and what to change."""

    input_fraction: float  # end-to-end input wait / step time
    verdict: str  # not | moderately | highly
    speedup_if_input_free: float  # end-to-end step time / compute-only step time (at least 1: below is noise)
    input_vs_compute: float  # input-only examples/s over compute-only examples/s (>1: input can keep up)
    input_cost_fraction: float  # 1 - compute-only / end-to-end step: waiting plus slowing the step (shared CPU)
    bottleneck: str | None  # the costliest stage paid every epoch (None without prefix timings)
    stage_costs: tuple[StageCost, ...]
    advice: tuple[Advice, ...]
    cause: str = ""  # what the step loses to: "stage", "per-step overhead", "host-CPU contention" ('' when nothing)
    host_fraction: float = 0.0  # of the end-to-end step, outside a compiled loop's step (wait + Python per step)
    startup_s: float = 0.0  # building the pipeline plus its first batch
    startup_fraction: float = 0.0  # of the run's estimated wall time (0 when the run's length is unknown)
    looped: bool = False  # the run takes its batches inside compiled loops (train.steps_per_loop > 1)

    @property
    def verdict_text(self) -> str:
        return VERDICTS[self.verdict]

    @property
    def summary(self) -> str:
        """One line: verdict, fraction, speedup and bottleneck."""
        line = (
            f"{self.verdict_text}: {100 * self.input_fraction:.1f}% of the step time waits for input; "
            f"{self.speedup_if_input_free:.2f}x faster if input were free"
        )
        if self.cause == "per-step overhead" and self.looped:
            line += (
                "; cause: a fixed cost per step, taking each batch from the iterator inside the compiled loop "
                "(the pipeline alone is far faster than the model)"
            )
        elif self.cause == "per-step overhead":
            line += (
                f"; cause: a fixed cost per step ({100 * self.host_fraction:.0f}% of it outside the compiled step; "
                "the pipeline alone is far faster than the model)"
            )
        elif self.cause == "host-CPU contention":
            line += "; cause: the pipeline's threads share the host's CPU with the compiled loop"
        elif self.bottleneck:
            line += f"; costliest stage: {self.bottleneck}"
        if self.startup_fraction >= STARTUP:
            line += (
                f"; start-up: {self.startup_s:.1f} s before the first batch ({self.startup_fraction:.0%} of the run)"
            )
        return line

    def as_dict(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), verdict_text=self.verdict_text, summary=self.summary)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Diagnosis:
        """The inverse of :meth:`as_dict` (e.g. from ``report.json``)."""
        d = {k: v for k, v in d.items() if k not in ("verdict_text", "summary")}
        d["stage_costs"] = tuple(StageCost(**c) for c in d["stage_costs"])
        d["advice"] = tuple(Advice(**a) for a in d["advice"])
        return cls(**d)


def verdict(fraction: float) -> str:
    """TensorBoard's classes: < 5% not, 5-20% moderately, >= 20% highly input-bound."""
    if fraction < MODERATE:
        return "not"
    return "moderately" if fraction < HIGH else "highly"


def stage_costs(m: Measurements) -> tuple[StageCost, ...]:
    """Marginal seconds per example of each stage; stages before a warm cache run once."""
    names = [s.name for s in m.stages]
    cache_at = names.index("cache") if m.setup.cache and "cache" in names else -1
    raw, prev = [], 0.0
    for i, stage in enumerate(m.stages):
        t = 1.0 / stage.examples_per_s
        # Reading a warm cache replaces every stage before it: its cost is its whole time.
        raw.append(t if i == cache_at else max(0.0, t - prev))
        prev = t
    steady = sum(c for i, c in enumerate(raw) if i >= cache_at)
    return tuple(
        StageCost(name, c, i >= cache_at, (c / steady if steady and i >= cache_at else 0.0))
        for i, (name, c) in enumerate(zip(names, raw, strict=True))
    )


def diagnose(m: Measurements) -> Diagnosis:
    """The verdict, the costliest stage and advice for one set of measurements."""
    fraction = m.wait_s / m.step_s
    costs = stage_costs(m)
    steady = [c for c in costs if c.every_epoch and c.s_per_example > 0]
    bottleneck = max(steady, key=lambda c: c.s_per_example).name if steady else None
    v = verdict(fraction)
    fast = per_step_overhead(m)
    if fast:
        bottleneck = None  # every prefix outruns the model: no stage is what the step waits for
    looped = m.setup.steps_per_loop > 1
    host = m.host_step_s / m.step_s
    if looped:
        # The batches are taken inside the compiled loop, which times each wait there: beside a fast
        # pipeline, a wait is the iterator's hand-off of each batch (no Python is left per step),
        # and a step slower than over a cached batch, its wait aside, lost the host's CPU.
        overhead = fast and v != "not"
        contention = fast and not overhead and slowed_in_loop(m) >= MODERATE
    else:
        # A single step's fixed cost is its wait plus its dispatch from Python, which its compute-only
        # time includes: with a compiled loop timed beside it, that whole share is what loops remove.
        overhead = fast and (host >= MODERATE if m.loop_step_s else v != "not")
        contention = False
    cause = "per-step overhead" if overhead else "host-CPU contention" if contention else "" if v == "not" else "stage"
    if overhead and looped:  # already in loops: no input setting removes a hand-off per batch
        advice = advise(m, "not", [])
    elif overhead:
        advice = _for_overhead(m)
    elif contention:
        advice = _for_contention(m)
    else:
        advice = advise(m, v, _costly(costs, bottleneck))
    startup_s, startup_fraction = startup(m)
    if startup_fraction >= STARTUP:
        advice = _for_startup(m, startup_s, startup_fraction) + [
            a for a in advice if a.setting != "pipeline.cache=false"
        ]
    return Diagnosis(
        input_fraction=fraction,
        verdict=v,
        speedup_if_input_free=max(1.0, m.step_s / m.compute_step_s),
        input_vs_compute=m.input_examples_per_s / m.compute_examples_per_s,
        bottleneck=bottleneck,
        input_cost_fraction=max(0.0, 1.0 - m.compute_step_s / m.step_s),
        stage_costs=costs,
        advice=tuple(advice),
        cause=cause,
        host_fraction=host,
        startup_s=startup_s,
        startup_fraction=startup_fraction,
        looped=looped,
    )


def startup(m: Measurements) -> tuple[float, float]:
    """(seconds before the first batch, their share of the run's estimated wall time: 0 when unknown)."""
    s = m.setup
    first = m.input_build_s + m.input_first_batch_s
    run_s = s.run_examples / s.batch_size * m.step_s if s.run_examples else 0.0
    return first, (first / (first + run_s) if run_s else 0.0)


def _for_startup(m: Measurements, first: float, share: float) -> list[Advice]:
    """A memory cache filled before the first batch, when streaming would keep up with the model."""
    s = m.setup
    parse = next((r for r in m.stages if r.name == "parse"), None)
    if not s.cache or s.cache_path or parse is None or m.input_build_s <= parse.first_s:
        return []
    if parse.examples_per_s < FAST * m.compute_examples_per_s:
        return []  # streaming would starve the model: the start-up buys the epochs' speed
    saved = m.input_build_s + m.input_first_batch_s - parse.first_s
    return [
        Advice(
            "pipeline.cache=false",
            f"the run waits {first:.1f} s ({share:.0%} of it) before its first batch, most of it parsing the whole "
            f"split into memory; read and parse alone give {parse.examples_per_s:,.0f} examples/s, "
            f"{parse.examples_per_s / m.compute_examples_per_s:.0f}x what the model consumes, so streaming costs "
            f"no step time and starts about {saved:.1f} s sooner",
        )
    ]


def slowed_in_loop(m: Measurements) -> float:
    """Of a looped end-to-end step, the share by which its compute (the wait aside) outlasted a step
    of the same loop over a cached batch (its hand-off aside): the host's CPU taken by the pipeline."""
    alone = m.compute_step_s - m.handoff_s
    return max(0.0, m.compute_s - alone) / m.step_s


def per_step_overhead(m: Measurements) -> bool:
    """The step waits although the pipeline alone, and each of its prefixes, runs ``FAST`` times
    faster than the model consumes: the wait is a fixed cost of taking each batch, not a stage.
    Prefixes that end before a warm cache run in the first epoch only: they do not count."""
    need = FAST * m.compute_examples_per_s
    every = [c.every_epoch for c in stage_costs(m)] if m.stages else []
    prefixes = [r.examples_per_s for r, e in zip(m.stages, every, strict=True) if e] or [m.input_examples_per_s]
    return m.input_examples_per_s >= need and min(prefixes) >= need


def _for_contention(m: Measurements) -> list[Advice]:
    """Looped steps slower beside a pipeline that alone is far faster: move preprocessing off the host."""
    s = m.setup
    if s.data_service:
        return []
    return [
        Advice(
            SERVICE,
            f"the pipeline alone gives {m.input_examples_per_s:,.0f} examples/s, "
            f"{m.input_examples_per_s / m.compute_examples_per_s:.0f}x what the model consumes, yet loops of "
            f"{s.steps_per_loop} steps compute {slowed_in_loop(m) * m.step_s * 1e3:.2f} ms per step longer beside it "
            f"than over a cached batch (each step's wait for its batch aside): "
            f"its threads take the host's {s.cpu_count} core(s) from the step; run `make data-service WORKERS=1` "
            f"on another host and point the run at the dispatcher (or a smaller pipeline.private_threadpool)",
        )
    ]


def _for_overhead(m: Measurements) -> list[Advice]:
    """``STEPS_PER_LOOP``: the fixed wait paid once per loop; the gain the measurements predict."""
    loop = LOOP  # only proposed to runs of one step per call (see diagnose)
    if m.loop_step_s:  # measured: loops of this many steps over a cached batch
        predicted = m.step_s / m.loop_step_s
        cost = (
            f"each step costs {m.host_step_s * 1e3:.2f} ms beyond a step of a compiled loop of {m.loop_steps} "
            f"({m.wait_s * 1e3:.2f} ms of it waiting for the batch, the rest dispatching the step from Python)"
        )
        gain = f"such loops over a cached batch took {m.loop_step_s * 1e3:.2f} ms a step, not {m.step_s * 1e3:.2f}"
    else:
        predicted = m.step_s / (m.compute_s + m.wait_s / loop)
        cost = f"each step waits {m.wait_s * 1e3:.2f} ms (taking the batch and handing it to the replicas from Python)"
        gain = f"paid once per {loop} steps"
    return [
        Advice(
            f"STEPS_PER_LOOP={loop}",
            f"the pipeline alone gives {m.input_examples_per_s:,.0f} examples/s, "
            f"{m.input_examples_per_s / m.compute_examples_per_s:.0f}x what the model consumes, yet {cost}: "
            f"a fixed cost per step that no stage setting removes; {loop} steps per compiled call: {gain}, "
            f"about {predicted:.2f}x the examples/s (train.steps_per_loop)",
        )
    ]


def _costly(costs: tuple[StageCost, ...], bottleneck: str | None) -> list[str]:
    """The costliest stage first, then every other stage taking at least ``SECONDARY`` of the steady time."""
    rest = sorted(
        (c for c in costs if c.every_epoch and c.name != bottleneck and c.share >= SECONDARY), key=lambda c: -c.share
    )
    return ([bottleneck] if bottleneck else []) + [c.name for c in rest]


def advise(m: Measurements, v: str, costly: list[str]) -> list[Advice]:
    """Settings to try for the ``costly`` stages (costliest first); a note on the model when input keeps up."""
    s = m.setup
    if v == "not":
        return [
            Advice(
                "MIXED_PRECISION=1",
                "input keeps up with the model: speed up the step itself "
                "(train.mixed_precision, a larger BATCH=, a faster device) before touching the pipeline",
            ),
            *_for_host(m),
        ]
    out: list[Advice] = []
    if not s.prefetch:
        out.append(
            Advice(
                "pipeline.prefetch=true pipeline.prefetch_buffer=-1",
                "no prefetch: input and compute take turns; prefetch overlaps them",
            )
        )
    for stage in costly:
        out += _for_stage(s, stage)
    out += _for_host(m)
    unique: dict[str, Advice] = {}
    for a in out:
        unique.setdefault(a.setting, a)
    return list(unique.values())


def _for_stage(s: Setup, stage: str | None) -> list[Advice]:
    if stage == "read":
        return _for_read(s)
    if stage == "parse":
        return _for_parse(s)
    if stage in ("augment", "preprocess", "batch", "preprocess batches"):
        return _for_map(s, stage)
    if stage == "shuffle":
        return _for_shuffle(s)
    if stage == "cache":
        return (
            [
                Advice(
                    "pipeline.cache_path=",
                    "reading the cache is the costliest stage: keep it in memory "
                    "rather than on disk when the parsed split fits",
                )
            ]
            if s.cache_path and s.cache_fits()  # never propose the memory cache the run already has
            else []
        )
    return []


def _for_shuffle(s: Setup) -> list[Advice]:
    whole = s.split_examples is not None and s.shuffle_buffer >= s.split_examples
    smaller = max(1, (s.split_examples if whole else s.shuffle_buffer) // 4)
    why = (
        f"the buffer ({s.shuffle_buffer}) holds the whole split ({s.split_examples} examples), so every epoch "
        f"reads all of it before its first batch"
        if whole
        else f"filling the {s.shuffle_buffer}-example buffer dominates"
    )
    return [
        Advice(
            f"data.shuffle_buffer={smaller}",
            f"{why}; a smaller buffer starts sooner (files are shuffled too, so order stays mixed)",
        )
    ]


def _cache_advice(s: Setup, stage: str) -> list[Advice]:
    if s.cache or not s.cache_fits():
        return []
    return [
        Advice(
            "pipeline.cache=true",
            f"{stage} is paid every epoch, but the parsed split is about "
            f"{s.parsed_split_mb:.0f} MiB and {s.available_ram_mb / 1024:.1f} GiB of RAM is free: cache after "
            f"parse and {stage} runs only in the first epoch",
        )
    ]


def _for_read(s: Setup) -> list[Advice]:
    out = []
    if not s.interleave or s.read_parallelism == 1:
        out.append(
            Advice(
                "pipeline.interleave=true pipeline.read_parallelism=-1",
                f"files are read one at a time ({s.parallel_reads} parallel read)",
            )
        )
    want = max(s.cycle_length, 2 * s.cpu_count)
    if s.files and s.files < max(s.parallel_reads, 2):
        out.append(
            Advice(
                f"SHARDS={want}",
                f"only {s.files} file(s) for {s.parallel_reads} parallel reads: "
                f"write {want} shards (data.shards, then make prepare) so reads can overlap",
            )
        )
    elif s.interleave and min(s.files, want) > s.cycle_length:  # never the cycle the run already has
        out.append(
            Advice(
                f"pipeline.cycle_length={min(s.files, want)}",
                f"{s.files} files but only {s.cycle_length} are read at once",
            )
        )
    return out + _cache_advice(s, "read")


def _for_parse(s: Setup) -> list[Advice]:
    out = []
    if s.map_parallelism == 1:
        out.append(Advice("pipeline.map_parallelism=-1", "parse runs on one core; AUTOTUNE runs it in parallel"))
    if not s.vectorize:
        out.append(
            Advice(
                "pipeline.vectorize=true",
                "records are parsed one by one; a batched parse "
                "(pipeline.parse_batch) pays the per-call overhead once per batch",
            )
        )
    out += _cache_advice(s, "parse")
    if s.decodes_images and s.preset != "dali":
        out.append(
            Advice(
                "PIPELINE=dali",
                "parse decodes images: DALI decodes (and augments) on its own threads, "
                "or on the GPU where there is one",
            )
        )
    return out


def _for_map(s: Setup, stage: str) -> list[Advice]:
    out = []
    if s.map_parallelism == 1:
        out.append(Advice("pipeline.map_parallelism=-1", f"{stage} runs on one core; AUTOTUNE runs it in parallel"))
    if stage == "augment" and s.decodes_images and s.preset != "dali":
        out.append(
            Advice(
                "PIPELINE=dali",
                "image augmentation is the costliest stage: DALI runs decode and "
                "augmentation in its own optimized pipeline",
            )
        )
    return out


def _for_host(m: Measurements) -> list[Advice]:
    """The pipeline is parallel and still too slow, or it slows the model down: use more machines."""
    s = m.setup
    parallel = s.map_parallelism != 1 and (s.interleave and s.read_parallelism != 1)
    short = m.input_examples_per_s < m.compute_examples_per_s
    contended = m.compute_s > CONTENTION * m.compute_step_s
    if not parallel or s.data_service or not (short or contended):
        return []
    workers = max(1, math.ceil(m.compute_examples_per_s / m.input_examples_per_s)) if short else 1
    reason = (
        f"the pipeline is already parallel on {s.cpu_count} core(s) but gives "
        f"{m.input_examples_per_s:.0f} examples/s where the model takes {m.compute_examples_per_s:.0f}"
        if short
        else f"the step takes {m.compute_s * 1e3:.1f} ms beside the pipeline but {m.compute_step_s * 1e3:.1f} ms "
        f"alone: preprocessing competes with the model for the host's CPU"
    )
    return [
        Advice(
            SERVICE,
            f"{reason}; run `make data-service WORKERS={workers}` (tf.data service workers) "
            f"on other hosts and point the run at the dispatcher",
        )
    ]
