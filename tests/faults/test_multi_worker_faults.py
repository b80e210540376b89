"""Faults under a real local multi_worker launch (2 worker processes over 127.0.0.1)."""

from __future__ import annotations

import json
import signal
import time

import psutil
import pytest

from tests.training import runs

ITEMS = ["CONFIG=tiny", "DATASET=synthetic", "NP=2", "DEVICES=1", "BATCH=16", "EPOCHS=3"]
SETS = [
    "data.image_size=16 data.train_examples=512 data.eval_examples=32 train.record_ids=true "
    "train.checkpoint_every=4 strategy.collective_timeout_s=30 train.model=resnet_small"
]
TOTAL = 3 * 512 // 16


def _start(runs_dir, strategy="multi_worker"):
    return runs.start(runs_dir, "mw", [*ITEMS, f"STRATEGY={strategy}"], SETS)


def _wait_for_steps(runs_dir, proc, steps):
    if runs.wait_for_lines(runs_dir / "mw" / "ids" / "worker_1.txt", proc, steps, timeout=300, poll_s=0.1):
        return
    raise AssertionError("workers never got going:\n" + (proc.stdout.read()[-3000:] if proc.poll() is not None else ""))


def _worker(proc, index):
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if json.loads(child.environ().get("TF_CONFIG", "{}")).get("task", {}).get("index") == index:
                return child
        except (psutil.Error, ValueError):
            continue
    raise AssertionError(f"worker {index} not found")


def _finish(proc, timeout):
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            psutil.Process(proc.pid).kill()
    return out


def _resume_and_check(runs_dir, strategy="multi_worker"):
    metrics = runs.train(runs_dir, "mw", [*ITEMS, f"STRATEGY={strategy}"], SETS, timeout=400)
    assert metrics["resumed_from_step"] > 0 and metrics["steps"] == TOTAL
    return metrics


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("strategy", ["multi_worker", "horovod"])
def test_sigterm_to_the_launch_checkpoints_every_worker_and_exits_zero(tmp_path, strategy):
    proc = _start(tmp_path, strategy)
    _wait_for_steps(tmp_path, proc, 6)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc, 240)
    ended_s = time.monotonic() - start
    assert proc.returncode == 0, out[-3000:]
    assert ended_s < 10, f"the run ended {ended_s:.1f} s after SIGTERM"
    assert out.count("SIGTERM: saved a checkpoint at step") == 2, out[-3000:]
    _resume_and_check(tmp_path, strategy)
    for worker in (0, 1):  # every step ran once on each worker, over both runs
        steps = [s for s, _ in runs.id_lines(tmp_path / "mw" / "ids" / f"worker_{worker}.txt")]
        assert sorted(steps) == list(range(1, TOTAL + 1)), f"worker {worker}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_worker_stops_the_run_with_a_message_and_the_run_resumes(tmp_path):
    proc = _start(tmp_path)
    _wait_for_steps(tmp_path, proc, 10)
    start = time.monotonic()
    _worker(proc, 1).kill()  # SIGKILL
    out = _finish(proc, 240)
    assert proc.returncode != 0 and time.monotonic() - start < 200, out[-3000:]
    assert "worker 1 exited with code -9; stopping the other 1 worker(s)" in out, out[-3000:]
    _resume_and_check(tmp_path)
