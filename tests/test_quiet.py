"""Quiet by default: the console shows stoker's lines, not what libraries print on every run.

Run as `make` runs them (a fresh interpreter, no TF_CPP_MIN_LOG_LEVEL set); VERBOSE=1 must bring
the library lines back, which is what shows the check can fail.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
    assert "INFO:" in log or "sdk_worker" in log  # Beam's workers spoke, into the log
