"""PIPELINE=auto (``ingest.autotune``): what it chooses, that it measures within its budget, that a
knob the user set is left alone, and that a later run on the same data reuses the choice."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

from ingest import autotune, datasets, pipeline
from ingest.built import Position
from ingest.options import AUTOTUNE, TUNED, DataOptions, PipelineOptions


def _target(shapes_dir, tmp_path, *, epochs: float = 3.0, batch: int = 16) -> autotune.Target:
    ds = datasets.get(DataOptions(name="shapes", data_dir=shapes_dir, train_examples=256, eval_examples=64))
    return autotune.Target(
        dataset=ds,
        split="train",
        batch_size=batch,
        seed=0,
        shuffle_buffer=64,
        run_examples=int(epochs * 256),
        data_dir=str(tmp_path),
    )


def test_auto_measures_every_knob_within_its_budget_saves_and_is_reused(shapes_dir, tmp_path):
    options = PipelineOptions(preset="auto", auto_budget_s=60)
    assert set(options.auto_tunes) == set(TUNED)
    chosen, choice = autotune.resolve(options, _target(shapes_dir, tmp_path))
    assert choice is not None and not choice.reused and not choice.untried
    assert set(choice.settings) == set(TUNED)
    assert choice.tuning_s <= 60
    assert choice.examples_per_s >= choice.baseline_examples_per_s > 0
    for knob, value in choice.settings.items():
        assert getattr(chosen, knob) == value, knob
    assert choice.settings["cache"] is True and choice.settings["cache_form"] == "decoded"  # 256 tiny images fit
    for knob in ("map_parallelism", "parse_batch", "prefetch_buffer", "private_threadpool"):
        assert knob in choice.reasons and "/s" in choice.reasons[knob], choice.reasons
    saved = list((tmp_path / ".stoker-auto").glob("shapes-*.json"))
    assert [p.stem for p in saved] == [choice.key]
    assert json.loads(saved[0].read_text())["settings"] == choice.settings

    again, second = autotune.resolve(options, _target(shapes_dir, tmp_path))
    assert second.reused and second.tuning_s == 0 and second.settings == choice.settings and again == chosen
    # another batch size is another pipeline: measured again, filed under another key
    _, other = autotune.resolve(
        dataclasses.replace(options, auto_budget_s=0.01), _target(shapes_dir, tmp_path, batch=32)
    )
    assert not other.reused and other.key != choice.key

    # the chosen options build the run's pipeline and give full batches
    order, _ = pipeline.training_order(
        _target(shapes_dir, tmp_path).dataset, "train", chosen, seed=0, shuffle_buffer=64
    )
    built = pipeline.build(
        _target(shapes_dir, tmp_path).dataset,
        "train",
        chosen,
        batch_size=16,
        training=True,
        seed=0,
        shuffle_buffer=64,
        position=Position(),
        order=order,
    )
    batch = next(iter(built.dataset))
    assert batch["image"].shape[0] == 16


def test_a_knob_the_config_sets_is_not_tuned(shapes_dir, tmp_path):
    options = PipelineOptions(preset="auto", map_parallelism=1, parse_batch=32, auto_budget_s=60)
    assert "map_parallelism" not in options.auto_tunes and "parse_batch" not in options.auto_tunes
    chosen, choice = autotune.resolve(options, _target(shapes_dir, tmp_path))
    assert "map_parallelism" not in choice.settings and "parse_batch" not in choice.settings
    assert chosen.map_parallelism == 1 and chosen.parse_batch == 32


def test_the_budget_bounds_tuning_and_a_partial_choice_is_not_kept(shapes_dir, tmp_path):
    chosen, choice = autotune.resolve(PipelineOptions(preset="auto", auto_budget_s=0.01), _target(shapes_dir, tmp_path))
    assert set(choice.untried) == {"map_parallelism", "parse_batch", "prefetch_buffer", "private_threadpool"}
    assert "no time to try more" in choice.line()
    assert chosen.map_parallelism == AUTOTUNE and chosen.parse_batch == 256  # optimized's values
    assert not (tmp_path / ".stoker-auto").exists()


@pytest.mark.parametrize(
    ("epochs", "budget_mb", "cache", "form"),
    [
        (1.0, 8192, False, None),  # read once: a cache would never be read
        (3.0, 8192, True, "decoded"),  # the parsed split fits
        (3.0, 0.5, True, "encoded"),  # 256 parsed 32 px images (0.75 MiB) do not fit 0.5 MiB; their JPEGs do
    ],
)
def test_where_to_cache_follows_passes_and_sizes(shapes_dir, tmp_path, epochs, budget_mb, cache, form):
    t = _target(shapes_dir, tmp_path, epochs=epochs)
    parsed_mb = 256 * t.dataset.example_bytes() / 2**20
    assert budget_mb == 8192 or parsed_mb > budget_mb  # the premise of the encoded row
    options = PipelineOptions(preset="auto", cache_budget_mb=budget_mb, auto_budget_s=0.01)
    chosen, choice = autotune.resolve(options, t)
    assert chosen.cache is cache, choice.reasons["cache"]
    if form:
        assert chosen.cache_form == form, choice.reasons["cache"]
    assert "MiB" in choice.reasons["cache"] or "times" in choice.reasons["cache"]


def test_no_candidate_repeats_the_current_value():
    """Over many configurations, every value tried differs from the one the pipeline already has."""
    for mp, pb, pf, pool, vec in itertools.product(
        (AUTOTUNE, 1, 2, 4), (64, 256, 512), (AUTOTUNE, 2, 8), (0, 3), (True, False)
    ):
        options = PipelineOptions(
            preset="auto",
            map_parallelism=mp,
            parse_batch=pb,
            prefetch_buffer=pf,
            private_threadpool=pool,
            vectorize=vec,
        )
        for knob, values in autotune._candidates(options, set(TUNED)):
            assert values and getattr(options, knob) not in values, (knob, values, options)


def test_other_presets_are_left_alone(shapes_dir, tmp_path):
    options = PipelineOptions(preset="optimized")
    assert options.auto_tunes == ()
    assert autotune.resolve(options, _target(shapes_dir, tmp_path)) == (options, None)


def test_a_partial_choice_is_not_saved_but_a_launcher_hands_it_to_its_workers(shapes_dir, tmp_path, monkeypatch):
    options = PipelineOptions(preset="auto", auto_budget_s=0.01)  # one measurement: every knob left untried
    _, choice = autotune.resolve(options, _target(shapes_dir, tmp_path))
    assert choice.untried and not (tmp_path / ".stoker-auto").exists()
    monkeypatch.setenv(*autotune.handoff(choice).popitem())
    chosen, worker = autotune.resolve(options, _target(shapes_dir, tmp_path))
    assert worker.reused and worker.tuning_s == 0 and worker.settings == choice.settings
    assert all(getattr(chosen, k) == v for k, v in choice.settings.items())
    # a worker whose request differs (another batch) measures for itself
    _, other = autotune.resolve(options, _target(shapes_dir, tmp_path, batch=32))
    assert not other.reused and other.key != choice.key
