"""``profiles.report`` from made-up measurements, and the command line's error path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from profiles import report
from profiles.diagnose import Diagnosis, diagnose
from profiles.measurements import Measurements
from tests.conftest import REPO
from tests.profiles.test_diagnose import NAIVE, make, rates


def test_report_files_say_the_verdict_stages_and_advice(tmp_path):
    m = make(NAIVE, wait=0.030, stages=rates(read=1e-5, parse=1e-3, augment=1e-5, batch=1e-6))
    d = diagnose(m)
    paths = report.write(tmp_path, m, d)
    assert [p.name for p in paths] == ["report.json", "report.md", "chart.png"]
    body = json.loads(paths[0].read_text())
    assert Measurements.from_dict(body["measurements"]) == m
    assert body["diagnosis"]["bottleneck"] == "parse" and body["diagnosis"]["verdict"] == "highly"
    md = paths[1].read_text()
    assert "**Verdict: highly input-bound.** 75.0% of the step time waits for input" in md
    assert "| parse **(costliest)** |" in md
    assert "`pipeline.map_parallelism=-1`" in md
    assert paths[2].read_bytes()[:4] == b"\x89PNG"
    # One renderer: report.md is what report.json renders (README.md embeds a committed one this way).
    assert Diagnosis.from_dict(body["diagnosis"]) == d
    assert report.from_report(body) == md
    deep = report.from_report(body, level=4)
    assert deep.startswith("#### Profile") and "\n##### Stages\n" in deep


def test_cli_refuses_multi_process_strategies_with_one_clear_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1")
    done = subprocess.run(
        [sys.executable, "-m", "profiles", "STRATEGY=horovod", f"DATA_DIR={tmp_path}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "make profile measures one process" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_report_without_prefix_timings(tmp_path):
    m = make(NAIVE, wait=0.001)
    md = report.markdown(m, diagnose(m), None, title="dali")
    assert "No prefix timings" in md and "| + stage |" not in md
    report.chart(m, diagnose(m), tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 0
