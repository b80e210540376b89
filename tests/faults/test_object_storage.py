"""Data and runs in a bucket (a local S3 server, moto, on 127.0.0.1): prepare, train, SIGKILL,
resume from the bucket's checkpoint with each example once; an interrupted prepare to a bucket
is never read as complete; a missing bucket or endpoint is one clear error.

Every s3:// access happens in the processes under test; this process reads the bucket with
boto3 (``stoker.local_s3.S3Object``), so the test helpers' ``Path`` calls work on objects too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from stoker import processes
from tests.training import runs
from tests.training.test_resume import kill_after_checkpoints

pytest.importorskip("moto", reason='the object-storage tests need moto_server: pip install "moto[server]"')
from stoker.local_s3 import LocalS3  # noqa: E402

EXAMPLES, BATCH, EVERY = 1024, 16, 8
STEPS = EXAMPLES // BATCH
DATA = [f"data.train_examples={EXAMPLES} data.eval_examples=64 data.shards=4 data.image_size=32"]
SETS = [
    "data.shuffle_buffer=256 pipeline.shuffle=true train.eval_every_epoch=false train.record_ids=true "
    f"train.checkpoint_every={EVERY} train.log_every=8"
]


@pytest.fixture(scope="module")
def s3():
    with LocalS3("stoker-test") as server:
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch):
    """The server's variables in this process's environment, so ``runs.env()`` passes them on."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3


def _prepare_cmd(data_dir: str, sets: list[str]) -> list[str]:
    return [sys.executable, "-m", "ingest", "prepare", "DATASET=shapes", "CONFIG=tiny", f"DATA_DIR={data_dir}"] + [
        a for s in sets for a in ("--set", s)
    ]


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=runs.env(), cwd=runs.REPO, capture_output=True, text=True, timeout=timeout)


def _latest_step(checkpoints) -> int:
    """The step of the newest checkpoint, from the ``checkpoint`` state object TensorFlow writes."""
    state = (checkpoints / "checkpoint").read_text()
    return int(re.search(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"', state, re.M).group(1))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_prepare_train_kill_resume_all_in_a_bucket(s3_env):
    s3 = s3_env
    started = time.monotonic()
    prepared = _run(_prepare_cmd(s3.url("data"), DATA), timeout=120)
    assert prepared.returncode == 0, prepared.stdout[-2000:] + prepared.stderr[-2000:]
    beam_log = (Path(tempfile.gettempdir()) / "s3_stoker-test_data_shapes.prepare.log").read_text()
    assert "exited with return code" not in beam_log and "pure virtual" not in beam_log, beam_log[-3000:]
    info = json.loads(s3.object("data/shapes/dataset_info.json").read_text())
    assert info["splits"]["train"]["num_examples"] == EXAMPLES and len(info["splits"]["train"]["shards"]) == 4

    runs_dir = s3.object("runs")
    items = ["DATASET=shapes", "CONFIG=tiny", f"DATA_DIR={s3.url('data')}", f"BATCH={BATCH}", "EPOCHS=1"]
    sets = DATA + SETS + ["train.prepare_missing=false"]
    ids_file = runs_dir / "cut" / "ids" / "worker_0.txt"
    kill_after_checkpoints(runs.command(runs_dir, "cut", items, sets), ids_file, 2 * EVERY + 3, timeout=120)

    text = ids_file.read_text()
    ids_file.write_text(text[: text.rfind("\n") + 1])  # a line torn by the kill is not a consumed step
    first = runs.id_lines(ids_file)
    saved = _latest_step(runs_dir / "cut" / "checkpoints")
    assert EVERY <= saved < STEPS and saved % EVERY == 0 and first[-1][0] < STEPS

    metrics = runs.train(runs_dir, "cut", items, sets, timeout=150)  # exits 0 (the s3 teardown abort is gone)
    second = runs.id_lines(ids_file)[len(first) :]
    assert metrics["steps"] == STEPS and metrics["resumed_from_step"] == saved
    assert [s for s, _ in second] == list(range(saved + 1, STEPS + 1))
    seen = Counter(i for s, ids in first if s <= saved for i in ids)
    seen.update(i for _, ids in second for i in ids)
    missing, twice = set(range(EXAMPLES)) - set(seen), [i for i, c in seen.items() if c > 1]
    assert not missing and not twice, f"missing {sorted(missing)[:10]}, twice {sorted(twice)[:10]}"
    keys = (runs_dir / "cut").listing()
    assert (
        any("/tensorboard/events.out.tfevents" in k for k in keys)
        and f"runs/cut/checkpoints/ckpt-{STEPS}.index" in keys
    )
    assert json.loads((runs_dir / "cut" / "config.json").read_text())["train"]["runs_dir"] == str(runs_dir)
    print(f"object-storage prepare + kill + resume: {time.monotonic() - started:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_interrupted_prepare_to_a_bucket_is_never_read_as_complete(s3_env):
    s3 = s3_env
    small = ["data.train_examples=128 data.eval_examples=32 data.shards=2 data.image_size=16"]
    assert _run(_prepare_cmd(s3.url("cut"), small), timeout=120).returncode == 0
    assert s3.object("cut/shapes/dataset_info.json").exists()

    big = ["data.train_examples=6000 data.eval_examples=200 data.shards=24 data.image_size=64"]
    proc = processes.spawn(_prepare_cmd(s3.url("cut"), big), env=runs.env(), cwd=runs.REPO, stdout=subprocess.DEVNULL)
    folder = s3.object("cut/shapes")
    try:
        deadline = time.monotonic() + 120
        while (
            time.monotonic() < deadline and proc.poll() is None and not any("-of-00024" in k for k in folder.listing())
        ):
            time.sleep(0.1)
        assert proc.poll() is None, "prepare finished before it could be interrupted"
    finally:
        processes.kill(proc)  # SIGKILL, the whole group (Beam's workers too)
    assert any("-of-00024" in k for k in folder.listing()), "no shard of the new prepare reached the bucket"
    assert not (folder / "dataset_info.json").exists(), "the old dataset_info.json outlived the new prepare's start"

    train = runs.command(
        s3.object("runs"), "never", [f"DATA_DIR={s3.url('cut')}", "CONFIG=tiny"], ["train.prepare_missing=false"]
    )
    refused = _run(train, timeout=120)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "dataset_info.json does not exist" in refused.stdout and "make prepare DATASET=shapes" in refused.stdout
    assert not s3.object("runs/never/metrics.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_missing_bucket_or_endpoint_is_one_clear_error(s3_env):
    s3 = s3_env
    train = ["DATA_DIR=s3://no-such-bucket/data", "CONFIG=tiny"]
    missing = _run(runs.command(s3.object("runs"), "x", train, []), timeout=100)
    assert missing.returncode == 2, missing.stdout[-2000:] + missing.stderr[-2000:]
    lines = [line for line in missing.stdout.splitlines() if "no-such-bucket" in line]
    assert len(lines) == 1 and "s3://no-such-bucket/" in lines[0] and "create the bucket" in lines[0], missing.stdout
    assert "Traceback" not in missing.stdout + missing.stderr

    os.environ["S3_ENDPOINT"] = "http://127.0.0.1:9"  # monkeypatch restores it; port 9 refuses connections
    began = time.monotonic()
    down = _run(_prepare_cmd(s3.url("down"), []), timeout=100)
    assert down.returncode == 2 and time.monotonic() - began < 60, down.stdout[-2000:] + down.stderr[-2000:]
    assert "does not answer" in down.stdout and "s3://stoker-test/down" in down.stdout


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_disk_cache_in_a_bucket(s3_env, shapes_dir, tmp_path):
    """Local data and run, ``pipeline.cache_path`` in the bucket: only the cache touches s3://."""
    s3 = s3_env
    items = [f"DATA_DIR={shapes_dir}", "CONFIG=tiny", "EPOCHS=2", "BATCH=32"]
    sets = [
        "data.train_examples=256 data.eval_examples=64 data.image_size=32 train.eval_every_epoch=false "
        f"pipeline.cache=true pipeline.cache_path={s3.url('cache/shapes')}"
    ]
    metrics = runs.train(tmp_path, "cached", items, sets, timeout=150)
    assert metrics["steps"] == 2 * 256 // 32
    cached = s3.object("cache").listing()
    assert any(k.startswith("cache/shapes") and k.endswith(".index") for k in cached), cached
