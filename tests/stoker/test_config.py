"""Config machinery: defaults, then YAML preset, then KEY=value; errors name the key."""

import dataclasses
import json

import pytest

from ingest import runconfig as run_config
from stoker import config as cfg
from stoker.config import ConfigError


def test_order_defaults_then_preset_then_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("train:\n  epochs: 7\n  batch_size: 16\ndata:\n  shuffle_buffer: 10\n")
    c = run_config.from_args([f"CONFIG={preset}", "EPOCHS=3"], ["data.shuffle_buffer=1000 pipeline.cache=false"])
    assert (c.train.epochs, c.train.batch_size, c.data.shuffle_buffer, c.pipeline.cache) == (3, 16, 1000, False)
    assert c.train.learning_rate == run_config.TrainOptions().learning_rate  # untouched default


def test_default_preset_is_what_make_train_runs():
    c = run_config.from_args([])
    assert c.data.name == "shapes" and c.pipeline.preset == "optimized"


def test_config_is_frozen():
    c = run_config.from_args([])
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.train.epochs = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    "item,message",
    [
        ("pipeline.cahce=false", r"unknown config key 'pipeline.cahce' \(did you mean pipeline.cache"),
        ("trian.epochs=2", r"unknown config key 'trian'"),
        ("train.epochs=two", r"train.epochs='two': expected an integer"),
        ("pipeline.cache=maybe", r"pipeline.cache='maybe': expected true or false"),
        ("train.learning_rate=fast", r"train.learning_rate='fast': expected a number"),
        ("train=3", r"train is a section: give train.<key>=value"),
        ("novalue", r"override 'novalue' is not KEY=value"),
    ],
)
def test_bad_overrides_name_the_key(item, message):
    with pytest.raises(ConfigError, match=message):
        run_config.from_args([], [item])


def test_unknown_make_variable_names_the_closest():
    with pytest.raises(ConfigError, match=r"unknown make variable EPOCH \(did you mean EPOCHS"):
        run_config.from_args(["EPOCH=2"])


def test_invariants_checked_at_construction():
    with pytest.raises(ConfigError, match=r"pipeline.parse_batch=0 must be >= 1"):
        run_config.from_args([], ["pipeline.parse_batch=0"])
    with pytest.raises(ConfigError, match=r"strategy.stages=3 needs as many devices"):
        run_config.from_args(["STRATEGY=pipeline", "STAGES=3", "DEVICES=2"])


def test_preset_fills_only_unset_switches():
    c = run_config.from_args(["PIPELINE=naive"], ["pipeline.prefetch=true"])
    assert c.pipeline.prefetch is True and c.pipeline.interleave is False


def test_deterministic_run_forces_a_deterministic_pipeline():
    assert run_config.from_args(["DETERMINISTIC=1"]).pipeline.deterministic is True


def test_resolved_config_round_trips_through_json():
    c = run_config.from_args(["EPOCHS=2", "PIPELINE=naive"])
    again = cfg.build(run_config.RunConfig, json.loads(c.to_json()))
    assert again == c


def test_yaml_is_loaded_safely(tmp_path):
    bad = tmp_path / "evil.yaml"
    bad.write_text("train: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        cfg.read_yaml(bad)


def test_every_key_is_listed():
    keys = cfg.keys(run_config.RunConfig)
    assert "pipeline.cache" in keys and "strategy.microbatches" in keys and "train.epochs" in keys
