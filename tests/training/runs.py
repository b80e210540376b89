"""Test helpers: run ``python -m training`` as a real process and read what it wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import tensorflow as tf

REPO = Path(__file__).resolve().parents[2]
# Variables a launched worker inherits from its launcher: a test run must start clean.
_LAUNCH_VARS = ("TF_CONFIG", "HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


def env() -> dict[str, str]:
    """The environment ``make train`` gives ``python -m training``."""
    out = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
    out.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return out


def command(runs_dir: Path, run: str, items: list[str], sets: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "training", f"RUN={run}", *items, "--set", f"train.runs_dir={runs_dir}"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def train(runs_dir: Path, run: str, items: list[str], sets: list[str], *, timeout: float) -> dict:
    """Run to completion within ``timeout`` seconds; returns metrics.json (fails with the output)."""
    return train_all(runs_dir, {run: items}, sets, timeout=timeout)[run]


def start(runs_dir: Path, run: str, items: list[str], sets: list[str]) -> subprocess.Popen:
    """``python -m training`` as :func:`command` says, in its own session, output piped as text."""
    return subprocess.Popen(
        command(runs_dir, run, items, sets),
        env=env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def train_all(
    runs_dir: Path,
    items: dict[str, list[str]],
    sets: list[str],
    *,
    timeout: float,
    extra_sets: dict[str, list[str]] | None = None,
) -> dict[str, dict]:
    """Run ``{run name: items}`` at the same time, each within ``timeout`` s; run name -> metrics.json.

    ``extra_sets`` adds ``--set`` items to some runs (later ones win).
    """
    extra = extra_sets or {}
    procs = {run: start(runs_dir, run, i, sets + extra.get(run, [])) for run, i in items.items()}
    deadline = time.monotonic() + timeout
    failed = []
    try:
        for run, proc in procs.items():
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if proc.returncode:
                failed.append(f"run {run} exited {proc.returncode}:\n{out[-4000:]}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if failed:
        raise AssertionError("\n".join(failed))
    return {run: json.loads((runs_dir / run / "metrics.json").read_text()) for run in items}


def start_and_kill(
    runs_dir: Path,
    run: str,
    items: list[str],
    sets: list[str],
    *,
    lines: int,
    timeout: float = 300,
    poll_s: float = 0.05,
) -> None:
    """Start a run (:func:`start`) and SIGKILL its whole process group once the chief's recorded
    ids hold ``lines`` steps; fails with the run's output when it ends (or ``timeout`` passes) first."""
    proc = start(runs_dir, run, items, sets)
    try:
        if not wait_for_lines(runs_dir / run / "ids" / "worker_0.txt", proc, lines, timeout=timeout, poll_s=poll_s):
            out = proc.stdout.read()[-3000:] if proc.poll() is not None else f"(still running after {timeout} s)"
            raise AssertionError(f"run {run} ({' '.join(items)}) did not reach step {lines}:\n{out}")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for_lines(path: Path, proc: subprocess.Popen, lines: int, *, timeout: float, poll_s: float = 0.05) -> bool:
    """Poll until ``path`` holds ``lines`` complete lines; False when ``proc`` ends or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= lines:
            return True
        time.sleep(poll_s)
    return False


def id_lines(path: Path) -> list[tuple[int, list[int]]]:
    """(step, example ids) lines a worker recorded with train.record_ids=true."""
    out = []
    for line in path.read_text().splitlines():
        step, *ids = map(int, line.split())
        out.append((step, ids))
    return out


def ids_seen(run_dir: Path) -> Counter:
    """How many times each example id was trained on, over every worker."""
    seen: Counter = Counter()
    for f in sorted((run_dir / "ids").glob("worker_*.txt")):
        for _, ids in id_lines(f):
            seen.update(ids)
    return seen


def model_weights(run_dir: Path) -> dict[str, np.ndarray]:
    """The chief's last checkpointed model variables, by checkpoint key."""
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    keys = [k for k in reader.get_variable_to_shape_map() if k.startswith("model/") and "OPTIMIZER" not in k]
    return {k: reader.get_tensor(k) for k in keys}
