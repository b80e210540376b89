"""``profiles.diagnose`` with made-up measurements: verdict classes, stage costs, advice."""

from __future__ import annotations

import dataclasses

import pytest

from profiles.diagnose import SERVICE, diagnose, stage_costs, verdict
from profiles.measurements import Measurements, Setup, StageRate

OPTIMIZED = Setup(files=8, parsed_split_mb=100.0, available_ram_mb=16000.0, cpu_count=2)
NAIVE = Setup(
    preset="naive",
    files=8,
    interleave=False,
    read_parallelism=1,
    map_parallelism=1,
    vectorize=False,
    cache=False,
    prefetch=False,
    parsed_split_mb=100.0,
    available_ram_mb=16000.0,
    decodes_images=True,
    has_augment=True,
    cpu_count=2,
)


def rates(**per_stage: float) -> tuple[StageRate, ...]:
    """Prefix rates from the seconds per example each stage adds, in the order given."""
    out, t = [], 0.0
    for name, added in per_stage.items():
        t += added
        out.append(StageRate(name=name, examples_per_s=1.0 / t))
    return tuple(out)


def make(
    setup: Setup = OPTIMIZED,
    *,
    wait: float,
    compute: float = 0.010,
    alone: float | None = None,
    input_rate: float = 10_000.0,
    stages: tuple[StageRate, ...] = (),
    loop: float = 0.0,
) -> Measurements:
    return Measurements(
        setup=setup,
        input_examples_per_s=input_rate,
        input_first_batch_s=0.5,
        compute_step_s=compute if alone is None else alone,
        wait_s=wait,
        compute_s=compute,
        step_waits=(wait,) * 3,
        step_computes=(compute,) * 3,
        stages=stages,
        loop_step_s=loop,
        loop_steps=20 if loop else 0,
    )


@pytest.mark.parametrize(
    "fraction, expected",
    [
        (0.0, "not"),
        (0.049, "not"),
        (0.05, "moderately"),
        (0.199, "moderately"),
        (0.20, "highly"),
        (0.9, "highly"),
    ],
)
def test_verdict_classes_match_tensorboards(fraction, expected):
    assert verdict(fraction) == expected


def test_fraction_and_speedup():
    d = diagnose(make(wait=0.030, compute=0.010))  # 40 ms per step, 10 of them compute
    assert d.input_fraction == pytest.approx(0.75)
    assert d.verdict == "highly"
    assert d.speedup_if_input_free == pytest.approx(4.0)
    assert "highly input-bound" in d.summary and "4.00x" in d.summary


def test_not_input_bound_advises_the_model_not_the_pipeline():
    d = diagnose(make(wait=0.0001, compute=0.010))
    assert d.verdict == "not"
    assert [a.setting for a in d.advice] == ["MIXED_PRECISION=1"]


def test_costliest_stage_is_the_largest_marginal_cost():
    m = make(
        NAIVE, wait=0.02, stages=rates(read=1e-5, parse=5e-4, shuffle=1e-6, augment=2e-5, preprocess=1e-5, batch=1e-6)
    )
    d = diagnose(m)
    assert d.bottleneck == "parse"
    assert [c.name for c in d.stage_costs] == ["read", "parse", "shuffle", "augment", "preprocess", "batch"]
    assert d.stage_costs[1].s_per_example == pytest.approx(5e-4)
    assert sum(c.share for c in d.stage_costs) == pytest.approx(1.0)


def test_a_faster_prefix_costs_nothing_rather_than_negative():
    stages = (StageRate(name="read", examples_per_s=100.0), StageRate(name="prefetch", examples_per_s=400.0))
    costs = stage_costs(make(NAIVE, wait=0.01, stages=stages))
    assert costs[1].s_per_example == 0.0


def test_stages_before_a_warm_cache_are_first_epoch_only():
    # parse is slow but cached: in the steady state, augment is what costs.
    stages = tuple(
        StageRate(name=n, examples_per_s=r)
        for n, r in [("read", 1e5), ("parse", 1e3), ("cache", 1e5), ("augment", 1 / 5.1e-4), ("preprocess", 1 / 5.2e-4)]
    )
    d = diagnose(make(OPTIMIZED, wait=0.02, stages=stages))
    assert [c.every_epoch for c in d.stage_costs] == [False, False, True, True, True]
    assert d.stage_costs[2].s_per_example == pytest.approx(1e-5)  # reading the cache costs its whole time
    assert d.bottleneck == "augment"


def test_naive_parse_bottleneck_advice_names_keys_and_the_cache_size():
    m = make(NAIVE, wait=0.05, stages=rates(read=1e-5, parse=1e-3, augment=1e-5, batch=1e-6))
    settings = {a.setting: a.why for a in diagnose(m).advice}
    assert "pipeline.prefetch=true pipeline.prefetch_buffer=-1" in settings
    assert "pipeline.map_parallelism=-1" in settings
    assert "pipeline.vectorize=true" in settings
    assert "100 MiB" in settings["pipeline.cache=true"]
    assert "PIPELINE=dali" in settings


def test_no_cache_advice_when_the_split_does_not_fit():
    big = dataclasses.replace(NAIVE, parsed_split_mb=50_000.0)
    m = make(big, wait=0.05, stages=rates(read=1e-5, parse=1e-3))
    assert "pipeline.cache=true" not in {a.setting for a in diagnose(m).advice}


def test_read_bottleneck_with_fewer_files_than_parallel_reads_asks_for_shards():
    few = dataclasses.replace(OPTIMIZED, files=1, cycle_length=4, cache=False, parsed_split_mb=None)
    d = diagnose(make(few, wait=0.05, stages=rates(read=1e-3, parse=1e-5)))
    assert d.bottleneck == "read"
    assert "SHARDS=4" in [a.setting for a in d.advice]


def test_parallel_pipeline_that_cannot_keep_up_asks_for_data_service_workers():
    m = make(OPTIMIZED, wait=0.03, compute=0.010, input_rate=2_000.0, stages=rates(read=1e-5, parse=1e-5, augment=4e-4))
    advice = {a.setting: a.why for a in diagnose(m).advice}
    service = next(k for k in advice if k.startswith("DATA_SERVICE=grpc://"))
    assert "WORKERS=4" in advice[service]  # the model takes 6400 examples/s, the host gives 2000


def test_cpu_contention_suggests_offloading_even_when_not_input_bound():
    m = make(OPTIMIZED, wait=0.0001, compute=0.020, alone=0.010)
    d = diagnose(m)
    assert d.verdict == "not"
    assert any(a.setting.startswith("DATA_SERVICE=") and "competes" in a.why for a in d.advice)


def test_measurements_round_trip_and_reject_impossible_values():
    m = make(NAIVE, wait=0.01, stages=rates(read=1e-4))
    assert Measurements.from_dict(m.as_dict()) == m
    with pytest.raises(ValueError, match="compute_step_s"):
        dataclasses.replace(m, compute_step_s=0.0)
    with pytest.raises(ValueError, match="examples_per_s"):
        StageRate(name="read", examples_per_s=0.0)


def test_a_second_costly_stage_gets_advice_too():
    # preprocess costs most, parse nearly as much: both get their advice, preprocess's first.
    m = make(NAIVE, wait=0.05, stages=rates(read=1e-5, parse=4e-4, augment=1e-5, preprocess=5e-4))
    settings = [a.setting for a in diagnose(m).advice]
    assert settings.index("pipeline.map_parallelism=-1") < settings.index("pipeline.vectorize=true")
    assert "pipeline.cache=true" in settings


def test_speedup_is_never_below_one():
    assert diagnose(make(wait=0.0, compute=0.010, alone=0.012)).speedup_if_input_free == 1.0


def test_windowed_mean_is_robust_to_one_hiccup():
    from profiles.scenarios import windowed_mean

    assert windowed_mean([1.0, 1.0, 1.0, 1.0, 1.0, 100.0], reps=3) == 1.0
    assert windowed_mean([1.0, 3.0], reps=5) == 2.0  # fewer values than windows: one window


def test_shuffle_bottleneck_names_a_buffer_smaller_than_the_split():
    setup = dataclasses.replace(NAIVE, split_examples=512, shuffle_buffer=4096)
    d = diagnose(make(setup, wait=0.05, stages=rates(read=1e-5, parse=1e-5, shuffle=1e-3)))
    assert d.bottleneck == "shuffle"
    assert any(a.setting == "data.shuffle_buffer=128" and "whole split" in a.why for a in d.advice)


def test_input_cost_counts_the_slowdown_of_a_shared_cpu():
    d = diagnose(make(wait=0.0005, compute=0.0195, alone=0.010))  # 20 ms end to end, 10 ms alone
    assert d.verdict == "not"
    assert d.input_cost_fraction == pytest.approx(0.5)


def test_a_fixed_wait_per_step_with_a_fast_pipeline_is_named_per_step_overhead():
    # The digits case: a tiny model (8.4 ms a step), the pipeline 152x faster, 6.8% of each step waiting.
    stages = rates(read=1e-6, parse=2e-6, cache=1e-6, shuffle=1e-6, batch=1e-6)
    m = make(wait=0.00061, compute=0.0084, input_rate=152 * 64 / 0.0084, stages=stages)
    d = diagnose(m)
    assert d.verdict == "moderately" and d.cause == "per-step overhead"
    assert d.bottleneck is None, "no stage is named when every prefix outruns the model"
    assert [a.setting for a in d.advice] == ["STEPS_PER_LOOP=20"]
    assert "fixed cost per step" in d.advice[0].why and "1.07x" in d.advice[0].why  # 9.01 / (8.4 + 0.61/20) ms
    assert "fixed cost per step" in d.summary
    # Looped steps take their batches inside the compiled call, which times the wait there: the same
    # wait is the iterator's hand-off of each batch, which more steps per loop would not remove.
    looped = diagnose(dataclasses.replace(m, setup=dataclasses.replace(OPTIMIZED, steps_per_loop=20)))
    assert looped.cause == "per-step overhead" and looped.bottleneck is None and looped.looped
    assert "inside the compiled loop" in looped.summary, looped.summary
    assert not any(a.setting.startswith(("STEPS_PER_LOOP", "DATA_SERVICE")) for a in looped.advice), looped.advice


def test_a_looped_step_slowed_beside_a_fast_pipeline_is_host_cpu_contention():
    # Loops of 20 over the pipeline: 0.02 ms of each 2.60 ms step waits for the batch (timed inside
    # the loop), against 0.10 ms over a cached batch, whose loop step takes 2.40 ms: the step itself
    # computes 2.58 ms where it took 2.30 ms, its hand-off aside (11% of the step): the host's CPU.
    stages = rates(read=1e-6, parse=2e-6, cache=1e-6, shuffle=1e-6, batch=1e-6)
    looped = dataclasses.replace(OPTIMIZED, steps_per_loop=20)
    m = make(looped, wait=0.00002, compute=0.00258, alone=0.0024, input_rate=590_000.0, stages=stages)
    d = diagnose(dataclasses.replace(m, handoff_s=0.0001))
    assert d.verdict == "not" and d.cause == "host-CPU contention", d.summary
    assert [a.setting for a in d.advice] == [SERVICE] and "0.28 ms per step longer" in d.advice[0].why
    # The same loop computing as fast as over the cached batch: nothing to name.
    calm = diagnose(dataclasses.replace(m, compute_s=0.0023, handoff_s=0.0001))
    assert calm.cause == "" and not any(a.setting == SERVICE for a in calm.advice), calm.summary


def test_dispatch_from_python_counts_as_per_step_overhead_when_a_compiled_loop_is_timed():
    # The tiny-model case measured here: 0.21 ms of a 4.40 ms step waits for the batch (under
    # TensorBoard's 5%), but compiled loops of 20 steps over the same batch take 2.54 ms a step:
    # 42% of each step is the host's Python work per step, which loops pay once per call.
    stages = rates(read=1e-6, parse=2e-6, cache=1e-6, shuffle=1e-6, batch=1e-6)
    m = make(wait=0.00021, compute=0.00419, alone=0.00415, input_rate=590_000.0, stages=stages, loop=0.00254)
    d = diagnose(m)
    assert d.verdict == "not" and d.input_fraction == pytest.approx(0.048, abs=0.001)
    assert d.cause == "per-step overhead" and d.host_fraction == pytest.approx(0.4227, abs=1e-3), d.summary
    assert d.bottleneck is None and [a.setting for a in d.advice] == ["STEPS_PER_LOOP=20"]
    assert "1.86 ms beyond a step of a compiled loop of 20" in d.advice[0].why, d.advice[0].why
    assert "1.73x" in d.advice[0].why  # 4.40 / 2.54 ms
    assert "42% of it outside the compiled step" in d.summary
    # A model whose compiled loop saves under 5% of the step: nothing per step worth a loop.
    big = diagnose(make(wait=0.0002, compute=0.040, input_rate=590_000.0, stages=stages, loop=0.039))
    assert big.cause == "" and not any(a.setting.startswith("STEPS_PER_LOOP") for a in big.advice), big.summary
    # A slow stage stays the finding whatever a loop would save.
    slow = rates(read=1e-5, parse=4e-4, batch=1e-6)
    d = diagnose(make(NAIVE, wait=0.02, compute=0.01, input_rate=2400.0, stages=slow, loop=0.005))
    assert d.cause == "stage" and d.bottleneck == "parse"
    with pytest.raises(ValueError, match="go together"):
        dataclasses.replace(m, loop_steps=0)


def test_a_slow_parse_before_a_warm_cache_does_not_hide_a_per_step_overhead():
    # The tiny-model case on decoded JPEGs: parse runs in the first epoch only (cached), slower
    # than the model consumes; every prefix that runs each epoch is far faster.
    stages = tuple(
        StageRate(name=n, examples_per_s=r)
        for n, r in [("read", 3e4), ("parse", 9e3), ("cache", 6e5), ("shuffle", 2e5), ("batch", 4.8e5)]
    )
    m = make(wait=0.00061, compute=0.0084, input_rate=152 * 64 / 0.0084, stages=stages)
    d = diagnose(m)
    assert d.cause == "per-step overhead" and d.bottleneck is None, d.summary
    assert [a.setting for a in d.advice] == ["STEPS_PER_LOOP=20"]


def test_not_input_bound_with_every_prefix_far_faster_names_no_stage():
    stages = rates(read=1e-6, parse=2e-6, cache=1e-6, shuffle=1e-6, batch=1e-6)
    d = diagnose(make(wait=0.0001, compute=0.0084, input_rate=152 * 64 / 0.0084, stages=stages))
    assert d.verdict == "not" and d.bottleneck is None and "costliest" not in d.summary


def test_a_slow_stage_is_still_a_stage_bottleneck():
    stages = rates(read=1e-5, parse=4e-4, batch=1e-6)  # parse: the pipeline at ~2,400 examples/s
    d = diagnose(make(NAIVE, wait=0.02, compute=0.01, input_rate=2400.0, stages=stages))
    assert d.cause == "stage" and d.bottleneck == "parse"
    assert not any(a.setting.startswith("STEPS_PER_LOOP") for a in d.advice)


def test_the_memory_cache_is_not_proposed_to_a_run_that_has_it():
    stages = rates(read=1e-4, parse=1e-4, cache=3e-3, batch=1e-6)  # reading the cache costliest
    in_memory = make(wait=0.02, compute=0.01, input_rate=300.0, stages=stages)
    assert "pipeline.cache_path=" not in [a.setting for a in diagnose(in_memory).advice]
    on_disk = dataclasses.replace(in_memory, setup=dataclasses.replace(OPTIMIZED, cache_path="/tmp/c"))
    assert "pipeline.cache_path=" in [a.setting for a in diagnose(on_disk).advice]


def _current(s: Setup, key: str):
    """The run's value of an advised setting (None when the setup does not record it)."""
    fields = {
        "pipeline.prefetch": "prefetch",
        "pipeline.interleave": "interleave",
        "pipeline.read_parallelism": "read_parallelism",
        "pipeline.map_parallelism": "map_parallelism",
        "pipeline.vectorize": "vectorize",
        "pipeline.cache": "cache",
        "pipeline.cache_path": "cache_path",
        "pipeline.cycle_length": "cycle_length",
        "SHARDS": "files",
        "PIPELINE": "preset",
        "data.shuffle_buffer": "shuffle_buffer",
        "STEPS_PER_LOOP": "steps_per_loop",
        "DATA_SERVICE": "data_service",
    }
    return getattr(s, fields[key]) if key in fields else None


def _same(current, value: str) -> bool:
    if isinstance(current, bool):
        return current == (value == "true")
    return str(current) == value


def test_no_advice_proposes_what_the_run_already_has():
    """A property over many made-up runs: every advice item changes at least one setting."""
    import random

    rng = random.Random(14)
    names = ("read", "parse", "cache", "shuffle", "augment", "preprocess", "batch")
    checked = 0
    for _ in range(3000):
        cache = rng.random() < 0.5
        setup = Setup(
            preset=rng.choice(["naive", "optimized", "dali", "auto"]),
            batch_size=rng.choice([16, 64, 256]),
            files=rng.choice([0, 1, 2, 4, 8, 64]),
            interleave=rng.random() < 0.5,
            cycle_length=rng.choice([1, 2, 4, 8]),
            read_parallelism=rng.choice([-1, 1, 2, 4]),
            map_parallelism=rng.choice([-1, 1, 2, 4]),
            vectorize=rng.random() < 0.5,
            cache=cache,
            prefetch=rng.random() < 0.5,
            data_service=rng.choice(["", "grpc://d:5050"]),
            split_examples=rng.choice([None, 1000, 100_000]),
            shuffle_buffer=rng.choice([0, 1024, 100_000]),
            parsed_split_mb=rng.choice([None, 10.0, 50_000.0]),
            available_ram_mb=rng.choice([1000.0, 16000.0]),
            decodes_images=rng.random() < 0.5,
            has_augment=rng.random() < 0.5,
            cpu_count=rng.choice([1, 2, 8]),
            cache_path=rng.choice(["", "/tmp/c"]) if cache else "",
            steps_per_loop=rng.choice([1, 20, 80]),
            run_examples=rng.choice([0, 1000, 1_000_000]),
        )
        stages = tuple(
            StageRate(name=n, examples_per_s=rng.uniform(100, 100_000), first_s=rng.uniform(0, 5))
            for n in names[: rng.randint(0, len(names))]
        )
        compute = rng.uniform(0.001, 0.1)
        m = Measurements(
            setup=setup,
            input_examples_per_s=rng.uniform(100, 200_000),
            input_first_batch_s=rng.uniform(0, 5),
            input_build_s=rng.uniform(0, 60),
            compute_step_s=compute,
            wait_s=rng.choice([0.0, rng.uniform(0, 0.1)]),
            compute_s=compute * rng.uniform(1, 2),
            stages=stages,
            **rng.choice([{}, {"loop_step_s": compute * rng.uniform(0.3, 1.1), "loop_steps": 20}]),
            handoff_s=rng.choice([0.0, compute * rng.uniform(0, 0.1)]),
        )
        for advice in diagnose(m).advice:
            pairs = [t.split("=", 1) for t in advice.setting.split() if "=" in t]
            known = [(k, v) for k, v in pairs if _current(setup, k) is not None]
            if known:
                checked += 1
                assert not all(_same(_current(setup, k), v) for k, v in known), (advice, setup)
    assert checked > 1000  # the property was exercised, not vacuous


def _startup_case(parse_rate: float, *, cache: bool = True, build_s: float = 20.0) -> Measurements:
    setup = dataclasses.replace(OPTIMIZED, cache=cache, batch_size=64, run_examples=64 * 300)  # 300 steps
    stages = (
        StageRate(name="read", examples_per_s=50_000, first_s=0.1),
        StageRate(name="parse", examples_per_s=parse_rate, first_s=0.3),
    )
    m = make(setup, wait=0.0, compute=0.010, stages=stages)  # 6,400 examples/s consumed; 3 s of steps
    return dataclasses.replace(m, input_build_s=build_s)


def test_startup_is_a_finding_and_a_memory_cache_filled_up_front_is_questioned():
    """Building the pipeline parses the split into memory for 20 s before a 3-s run: start-up is
    named, and streaming is advised when read+parse alone outrun the model (with the time saved)."""
    d = diagnose(_startup_case(parse_rate=40_000))
    assert d.startup_s == pytest.approx(20.5) and d.startup_fraction > 0.8
    assert "start-up: 20.5 s before the first batch" in d.summary
    first = d.advice[0]
    assert first.setting == "pipeline.cache=false" and "20.2 s sooner" in first.why


def test_startup_advice_needs_a_stream_that_keeps_up_and_a_cache_to_drop():
    slow = diagnose(_startup_case(parse_rate=8_000))  # streaming would starve the model: keep the cache
    assert slow.startup_fraction > 0.8 and all(a.setting != "pipeline.cache=false" for a in slow.advice)
    uncached = diagnose(_startup_case(parse_rate=40_000, cache=False))
    assert all(a.setting != "pipeline.cache=false" for a in uncached.advice)
    quick = diagnose(_startup_case(parse_rate=40_000, build_s=0.1))  # 0.6 s before 3 s of steps: 17%
    short = diagnose(dataclasses.replace(_startup_case(parse_rate=40_000, build_s=0.0), input_first_batch_s=0.1))
    assert quick.startup_fraction > 0.1 and short.startup_fraction < 0.1
    assert "start-up" not in short.summary
