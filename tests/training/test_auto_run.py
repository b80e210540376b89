"""PIPELINE=auto in a real multi-process run: the launcher chooses once, before its workers start,
and every worker builds its pipeline from that saved choice (config.json says so)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training import runs


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_launcher_chooses_and_workers_reuse_the_choice(tmp_path, shapes_dir):
    items = ["STRATEGY=multi_worker", "NP=2", "DEVICES=1", "PIPELINE=auto", "CONFIG=tiny", "EPOCHS=2"]
    sets = [f"data.data_dir={shapes_dir} data.train_examples=256 data.eval_examples=64 data.image_size=32"]
    sets.append("pipeline.auto_budget_s=20 pipeline.map_parallelism=2")  # map_parallelism is set: not tuned
    metrics = runs.train(tmp_path, "auto", items, sets, timeout=500)
    assert metrics["steps"] > 0
    config = json.loads((tmp_path / "auto" / "config.json").read_text())
    auto = config["auto"]
    assert auto["reused"] is True, auto  # the chief worker took what the launcher measured
    saved = Path(shapes_dir, ".stoker-auto", f"{auto['key']}.json")
    # a choice the budget cut short is handed to the workers but not saved for later runs
    assert saved.is_file() != bool(auto["untried"]), auto
    if saved.is_file():
        launcher = json.loads(saved.read_text())
        assert launcher["settings"] == auto["settings"] and launcher["tuning_s"] > 0 and not launcher["reused"]
    assert "map_parallelism" not in auto["settings"] and config["pipeline"]["map_parallelism"] == 2
    for knob, value in auto["settings"].items():
        assert config["pipeline"][knob] == value, knob
