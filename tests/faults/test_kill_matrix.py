"""No process outlives its run: each kind of run killed at random moments in each of four ways.

Kinds: a local multi_worker run (2 workers), a horovod run (2 ranks under ``horovodrun``), the
tf.data service (``python -m ingest service``: a dispatcher and 2 workers) and a Beam prepare
(DirectRunner, multi-processing workers). Ways: SIGKILL of the whole process group (a scheduler,
a lost terminal), SIGKILL of the launcher alone, SIGTERM to the launcher alone, and Ctrl-C
(SIGINT to the foreground group, as a terminal sends it). Each attempt starts the command with a
marker of its own in the environment (every child inherits it), kills it at a random moment from
start-up to about the end of a normal run, and then requires that no process carrying the marker
is left 10 s later. After its attempts, each kind's command is run again to completion (the
service: until it reports ready, then stopped with SIGTERM, leaving nothing).

``STOKER_KILLS`` kills per kind and way (1 by default); ``make test-kills`` runs 10. A run that
ends by itself before its moment is recorded but not counted, and later moments are drawn within
that shorter run: the first guesses of a run's length (25 s) were twice what a training run takes
here, so on 2026-12-07 about 6 attempts in 10 were not kills at all.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ingest import service
from stoker import processes
from tests.training import runs

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("STOKER_KILLS", "1"))
RECORD = Path(runs.REPO) / "runs" / "kill-matrix"
MARK = "STOKER_KILL_MARK"
WAYS = ("group-SIGKILL", "launcher-SIGKILL", "launcher-SIGTERM", "Ctrl-C")
TRAIN = [
    "CONFIG=tiny",
    "DATASET=synthetic",
    "BATCH=16",
    "EPOCHS=1",
    "--set",
    "data.image_size=16 data.train_examples=640 data.eval_examples=32 train.checkpoint_every=5",
]


def _command(kind: str, tmp) -> tuple[list[str], float]:
    """The command of ``kind`` and how long a normal run of it takes here (the kill window)."""
    py = sys.executable
    if kind == "multi_worker":
        cmd = [py, "-m", "training", "STRATEGY=multi_worker", "NP=2", "DEVICES=1", *TRAIN]
        return cmd + ["--set", f"train.runs_dir={tmp}/runs"], 25.0
    if kind == "horovod":
        return [py, "-m", "training", "STRATEGY=horovod", "NP=2", *TRAIN, "--set", f"train.runs_dir={tmp}/runs"], 25.0
    if kind == "data_service":
        port = service.free_port(3)
        return [py, "-m", "ingest", "service", "--workers", "2", "--port", str(port), "--work-dir", f"{tmp}/j"], 8.0
    if kind == "beam":
        sets = "data.train_examples=400 data.eval_examples=40 data.image_size=32 data.shards=4"
        return [py, "-m", "ingest", "prepare", "DATASET=shapes", f"DATA_DIR={tmp}/data", "--set", sets], 15.0
    raise ValueError(kind)


def _terminal_signals() -> None:
    """In the child before exec: SIGINT as a terminal's foreground job has it. A shell's background
    job (``make test-kills &``, a CI runner) inherits SIGINT ignored, and Python keeps an inherited
    SIG_IGN, so without this a Ctrl-C during start-up would be ignored by design rather than tested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(cmd: list[str], mark: str, log: Path) -> subprocess.Popen:
    env = dict(runs.env(), **{MARK: mark})
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(  # noqa: PLW1509 (only a signal disposition is set before exec)
            cmd,
            cwd=runs.REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_terminal_signals,
        )


def _record(kind: str, entry: dict) -> None:
    """One line per attempt in ``runs/kill-matrix/<kind>.jsonl``: a failed CI run keeps what happened."""
    RECORD.mkdir(parents=True, exist_ok=True)
    with (RECORD / f"{kind}.jsonl").open("a") as f:
        f.write(json.dumps(entry) + "\n")


def _kill(proc: subprocess.Popen, way: str) -> None:
    try:
        if way == "group-SIGKILL":
            os.killpg(proc.pid, signal.SIGKILL)
        elif way == "launcher-SIGKILL":
            proc.send_signal(signal.SIGKILL)
        elif way == "launcher-SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:  # Ctrl-C: the terminal sends SIGINT to every process of the foreground group
            os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        pass  # it ended by itself before the moment came


def _left_after(mark: str) -> list[str]:
    return processes.kill_lingering(lambda: processes.marked(MARK, mark))


def _to_completion(kind: str, cmd: list[str], tmp) -> None:
    mark = uuid.uuid4().hex
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=runs.REPO,
        env=dict(runs.env(), **{MARK: mark}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        if kind == "data_service":
            for line in proc.stdout:
                if "tf.data service ready" in line:
                    break
            else:
                raise AssertionError("the service ended before it was ready")
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _record(kind, dict(attempt="to completion", exit=proc.returncode, ended_s=round(time.monotonic() - start, 1)))
    if kind != "data_service":
        assert proc.returncode == 0, f"{kind} did not complete after the kills (exit {proc.returncode}):\n{out[-3000:]}"
    left = _left_after(mark)
    assert not left, f"{kind}: processes left 10 s after a normal end: {left}"


KINDS = ["multi_worker", "horovod", "beam", "data_service"]


@pytest.mark.timeout(600 + 600 * KILLS)
@pytest.mark.parametrize("kind", KINDS)
def test_no_process_outlives_a_killed_run(tmp_path, kind):
    rng = random.Random(f"kill-{kind}")
    failures = []
    cmd, duration = _command(kind, tmp_path)
    kills = dict.fromkeys(WAYS, 0)
    for attempt in range(3 * KILLS):  # a run that ends before its moment is not a kill: try again
        for way in [w for w in WAYS if kills[w] < KILLS]:
            mark = uuid.uuid4().hex
            log = tmp_path / f"{kind}-{attempt}-{way}.log"
            proc = _start(cmd, mark, log)
            moment = rng.uniform(0.0, duration)
            start = time.monotonic()
            try:
                proc.wait(timeout=moment)
                killed = False
            except subprocess.TimeoutExpired:
                _kill(proc, way)
                killed = True
            left = _left_after(mark)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            ended_s = round(time.monotonic() - start, 1)
            entry = dict(attempt=attempt, way=way, moment_s=round(moment, 1), killed=killed, ended_s=ended_s)
            _record(kind, dict(entry, left=left, exit=proc.returncode))
            kills[way] += killed
            if not killed:  # this machine runs it faster than the guess: draw later moments within a run
                duration = min(duration, 0.9 * ended_s)
            if left:
                tail = log.read_text(errors="replace")[-1500:]
                failures.append(f"attempt {attempt} {way} at {moment:.1f} s: {left}\n  its output ended:\n{tail}")
    assert not failures, f"{kind}: processes outlived the run:\n" + "\n".join(failures)
    assert min(kills.values()) == KILLS, f"{kind}: kills per way {kills}: the run kept ending before its moment"
    _to_completion(kind, cmd, tmp_path)
