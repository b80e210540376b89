"""A run or a prepare killed at any moment leaves nothing a later run would trust."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ingest import datasets
from ingest.options import DataOptions
from stoker.errors import DataError
from tests.training import runs

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_interrupted_prepare_is_detected_and_redone(tmp_path):
    opts = ["DATASET=shapes", f"DATA_DIR={tmp_path}"]
    sets = ["--set", "data.train_examples=4000 data.eval_examples=200 data.shards=16 data.image_size=64"]
    cmd = [runs.sys.executable, "-m", "ingest", "prepare", *opts, *sets]
    proc = subprocess.Popen(
        cmd, env=runs.env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )  # Beam's worker processes share the group
    partial = tmp_path / "shapes.partial"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not list(partial.glob("*.tfrecord")):
        time.sleep(0.05)
    assert proc.poll() is None, "prepare finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # what was left is not a dataset: training refuses it with the prepare advice
    assert not (tmp_path / "shapes" / "dataset_info.json").exists()
    with pytest.raises(DataError, match="make prepare DATASET=shapes"):
        datasets.get(DataOptions(name="shapes", data_dir=str(tmp_path))).files("train")
    done = subprocess.run(cmd, env=runs.env(), cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    info = json.loads((tmp_path / "shapes" / "dataset_info.json").read_text())
    assert info["splits"]["train"]["num_examples"] == 4000 and len(info["splits"]["train"]["shards"]) == 16
    assert not partial.exists()
    assert sum(s["num_examples"] for s in info["splits"]["train"]["shards"]) == 4000


def test_metrics_and_config_are_written_atomically(tmp_path):
    from ingest.runconfig import write_json_atomic

    target = tmp_path / "metrics.json"
    write_json_atomic(target, '{"a": 1}')
    write_json_atomic(target, '{"a": 2}')
    assert json.loads(target.read_text()) == {"a": 2} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_no_unsafe_deserialization_in_stoker():
    """Configs load with yaml.safe_load; nothing unpickles data files."""
    bad = []
    for folder in ("stoker", "ingest", "strategies", "training", "profiles", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            for needle in ("pickle.load", "yaml.load(", "unsafe_load", "yaml.Loader", "np.load(", "allow_pickle=True"):
                if needle in text:
                    bad.append(f"{path.relative_to(REPO)}: {needle}")
    assert not bad, bad
