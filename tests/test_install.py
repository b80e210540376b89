"""`pip install -e .` puts only `stoker` into site-packages: no top-level `training`, `benchmarks`
(or `ingest`, `strategies`, `profiles`) of stoker's can collide with another project's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("name", ["training", "benchmarks", "ingest", "strategies", "profiles"])
def test_only_stoker_is_importable_outside_the_checkout(tmp_path, name):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = f"import importlib.util, stoker.config; print(importlib.util.find_spec({name!r}) is None)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stdout + out.stderr
