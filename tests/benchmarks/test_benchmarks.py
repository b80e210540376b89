"""The benchmark suites: import safety, report rendering, and a QUICK=1 run of every suite."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from benchmarks import report, runner
from benchmarks.config import BenchConfig
from tests.conftest import REPO

LIGHT = (
    "benchmarks",
    "benchmarks.__main__",
    "benchmarks.runner",
    "benchmarks.report",
    "benchmarks.config",
    "benchmarks.machine",
    "benchmarks.rates",
    "benchmarks.data",
    "benchmarks.dali_loader",
)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=REPO, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")


def test_cli_modules_import_without_tensorflow_or_work(tmp_path):
    code = (
        "import sys, os; "
        + "; ".join(f"import {m}" for m in LIGHT)
        + "; assert 'tensorflow' not in sys.modules, 'tensorflow imported'; print(os.listdir('.'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # nothing written at import


def test_every_suite_module_imports_without_running(tmp_path):
    mods = [
        "benchmarks.ceilings",
        "benchmarks.ablation",
        "benchmarks.loaders",
        "benchmarks.artificial",
        "benchmarks.images",
        "benchmarks.torch_loader",
    ]
    code = "import os; " + "; ".join(f"import {m}" for m in mods) + "; print(os.listdir('.'))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_config_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="crop=300"):
        BenchConfig(crop=300)
    with pytest.raises(ValueError, match="reps=0"):
        BenchConfig(reps=0)
    assert BenchConfig.full().reps >= 5
    assert BenchConfig.smoke().quick


def test_target_met_is_a_ratio_comparison():
    assert runner.Target("x", 1.2, 1.25).met
    assert not runner.Target("x", 1.2, 1.19).as_dict()["met"]


def _fake_result() -> dict:
    rows = [
        {
            "group": "image",
            "name": "naive",
            "unit": "examples/s",
            "first_s": 0.5,
            "median": 100.0,
            "low": 90.0,
            "high": 110.0,
            "reps": 5,
            "items_per_rep": 640,
            "x_naive": 1.0,
            "of_ceiling": 0.1,
        },
        {
            "group": "artificial",
            "name": "naive",
            "unit": "calls/s",
            "first_s": 0.3,
            "median": 4.0,
            "low": 3.0,
            "high": 5.0,
            "reps": 5,
            "items_per_rep": 1,
            "seconds": 0.25,
            "seconds_low": 0.2,
            "seconds_high": 0.333,
        },
    ]
    load = {"before": [1, 1, 1], "after": [2, 2, 2]}
    machine = {
        "cpu_model": "cpu",
        "cores": 2,
        "memory_gb": 8,
        "load_average": load,
        "packages": {"tensorflow": "2.16.2"},
        "time_utc": "now",
    }
    return {
        "suite": "ablation",
        "rows": rows,
        "targets": [runner.Target("t", 0.8, 0.1, "d").as_dict()],
        "notes": ["n"],
        "machine": machine,
        "seconds": 12.0,
    }


def test_readme_tables_are_regenerated_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"prose before\n{report.START}\nold\n{report.END}\nprose after\n")
    report.update_readme(readme, [_fake_result()])
    text = readme.read_text()
    assert text.startswith("prose before") and text.endswith("prose after\n") and "old" not in text
    assert "| naive | 100 (90-110) | 1.00 | 10% | 0.50 |" in text
    assert "0.250 s (0.200-0.333)" in text and "**no**" in text
    (tmp_path / "plain.md").write_text("no markers here\n")
    with pytest.raises(ValueError, match="markers"):
        report.update_readme(tmp_path / "plain.md", [])


def test_torch_crop_params_stay_inside_the_image():
    pytest.importorskip("torch")
    from benchmarks.torch_loader import crop_params

    rng = random.Random(0)
    for _ in range(500):
        left, top, w, h = crop_params(256, 200, rng)
        assert left >= 0 and top >= 0 and left + w <= 256 and top + h <= 200 and w > 0 and h > 0


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_quick_run_of_every_suite(tmp_path):
    """``make bench QUICK=1`` in small: every suite in its own process, JSON and README written."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# bench\n{report.START}\n{report.END}\n")
    cmd = [
        sys.executable,
        "-m",
        "benchmarks",
        "--quick",
        "--data-dir",
        str(tmp_path / "data"),
        "--results-dir",
        str(tmp_path / "results"),
        "--readme",
        str(readme),
        "--timeout",
        "150",
    ]
    out = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stderr[-3000:]
    for suite in runner.SUITES:
        result = json.loads((tmp_path / "results" / f"{suite}.json").read_text())
        assert result["rows"], suite
        assert all(r["reps"] == 2 and r["median"] > 0 and r["low"] <= r["median"] <= r["high"] for r in result["rows"])
        assert {"cpu_model", "cores", "memory_gb", "packages", "load_average"} <= set(result["machine"])
        assert f"### {suite}" in out.stdout and f"### {suite}" in readme.read_text()
    loaders = json.loads((tmp_path / "results" / "loaders.json").read_text())
    shapes = {tuple(r["batch_shape"]) for r in loaders["rows"]}
    assert shapes == {(16, 224, 224, 3)}, shapes  # every loader gives the same float batches
