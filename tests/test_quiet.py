"""Quiet by default: the console shows stoker's lines, not what libraries print on every run.

Run as `make` runs them (a fresh interpreter, no TF_CPP_MIN_LOG_LEVEL set); VERBOSE=1 must bring
the library lines back, which is what shows the check can fail.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stoker import cli
from tests.conftest import REPO

NOISE = (
    "Unable to register cuDNN factory",
    "Unable to register cuBLAS factory",
    "apitools not found",
    "INFO:apache_beam",
    "INFO:__main__",
    "semi_persistent_directory",
)


def _run(args: list[str], verbose: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "VERBOSE")}
    env |= {"PYTHONPATH": REPO} | ({"VERBOSE": "1"} if verbose else {})
    out = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=True
    )
    return out.stdout + out.stderr


def _noise(text: str) -> list[str]:
    return [line[:160] for line in text.splitlines() if any(n in line for n in NOISE)]


@pytest.mark.timeout(300)
def test_datasets_listing_is_quiet_unless_verbose():
    assert _noise(_run(["ingest", "datasets"], verbose=False)) == []
    assert any("cuDNN" in line for line in _noise(_run(["ingest", "datasets"], verbose=True)))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_prepare_is_quiet_and_keeps_beams_output_in_a_log(tmp_path):
    args = [
        "ingest",
        "prepare",
        "DATASET=shapes",
        f"DATA_DIR={tmp_path}",
        "--set",
        "data.train_examples=64 data.eval_examples=16",
    ]
    text = _run(args, verbose=False)
    assert _noise(text) == [], _noise(text)
    assert "prepared" in text
    log = (tmp_path / "shapes.prepare.log").read_text()
    # Beam's workers spoke, into the log (Beam 2.61's workers say little more than their imports' warnings)
    assert "INFO:" in log or "sdk_worker" in log or "Warning" in log


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_training_run_is_quiet(tmp_path):
    """`make -s train CONFIG=tiny` (prepare included): stoker's lines only."""
    args = ["training", "CONFIG=tiny", f"DATA_DIR={tmp_path / 'data'}", "--set", f"train.runs_dir={tmp_path / 'runs'}"]
    text = _run(args, verbose=False)
    assert _noise(text) == [] and not [line for line in text.splitlines() if cli.is_noise(line)], _noise(text)
    assert "done:" in text


def test_worker_noise_is_recognised_and_kept_with_verbose(monkeypatch):
    lines = {
        "I0000 00:00:1796226133.082592   30896 coordination_service_agent.cc:303] Coordination agent connected.": True,
        "E0000 00:00:1796226154.058541   31016 coordination_service_agent.cc:749] Coordination agent is set to "
        "ERROR: UNAVAILABLE: Error reported from /job:worker/task:1": True,
        "W0000 00:00:1796225928.617897   22049 data_service_client.cc:450] Failed to heartbeat to dispatcher": True,
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR": True,
        "E0000 00:00:1796226154.1   31016 some_op.cc:12] a real error": False,
        "15:42:35 stoker: done: 16 steps": False,
    }
    monkeypatch.delenv("VERBOSE", raising=False)
    assert {line: cli.is_noise(line) for line in lines} == lines
    monkeypatch.setenv("VERBOSE", "1")
    assert not any(cli.is_noise(line) for line in lines)
