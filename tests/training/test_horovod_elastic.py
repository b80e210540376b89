"""Horovod elastic: one rank SIGKILLed and a slot added mid-epoch; every step's global batch counted.

A run of ``synthetic`` (480 examples, global batch 24: 20 steps an epoch) starts with
``STRATEGY=horovod ELASTIC=1 NP=2 MIN_NP=1 MAX_NP=3``. Once a few steps are committed the test
SIGKILLs one rank; the survivor goes on alone from the last commit; once it has committed steps
alone the test raises the slots file to 3 (the dead rank's name stays blacklisted, so 2 ranks
run again) and a new rank joins. Each rank records the ids of the steps it committed; every step
of the run must be recorded once by each rank of the world that committed it, and the ranks'
parts, in rank order, must be the global batch an uninterrupted single pipeline gives.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.training import runs
from tests.training.test_elastic import EXAMPLES, expected_batches, wait_gone

pytestmark = pytest.mark.slow

# 30 epochs (600 steps, ~20 s of training here): a joining rank needs 6-15 s to start, and the
# survivor trains alone meanwhile, at ~40 steps/s
BATCH, EPOCHS, COMMIT_EVERY = 24, 30, 2
TOTAL = EPOCHS * EXAMPLES // BATCH
ITEMS = ["CONFIG=tiny", "DATASET=synthetic", f"BATCH={BATCH}", f"EPOCHS={EPOCHS}"]
ITEMS += ["STRATEGY=horovod", "ELASTIC=1", "NP=2", "MIN_NP=1", "MAX_NP=3"]
SETS = [
    f"data.image_size=16 data.train_examples={EXAMPLES} data.eval_examples=32 data.shuffle_buffer=100 "
    "train.checkpoint_every=10 train.eval_every_epoch=false train.record_ids=true train.log_every=20 "
    f"strategy.commit_every={COMMIT_EVERY} strategy.collective_timeout_s=60"
]


def committed(ids_dir: Path) -> dict[int, dict[int, list[int]]]:
    """step -> {rank: that rank's ids}, from every rank's id file (whole lines only)."""
    out: dict[int, dict[int, list[int]]] = defaultdict(dict)
    for path in sorted(ids_dir.glob("worker_*.txt")):
        rank = int(path.stem.split("_")[1])
        text = path.read_text()
        for line in text[: text.rfind("\n") + 1].splitlines():
            step, *ids = map(int, line.split())
            assert rank not in out[step], f"step {step} committed twice by rank {rank}"
            out[step][rank] = ids
    return out


def ranks(runs_dir: Path) -> dict[int, psutil.Process]:
    """HOROVOD_RANK -> the training process of this run holding it (as first started)."""
    marker, found = f"train.runs_dir={runs_dir}", {}
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd and "-m training" in cmd and "horovodrun" not in cmd:
            try:
                rank = p.environ().get("HOROVOD_RANK")
            except psutil.Error:
                continue
            if rank is not None and not cmd.startswith(("/bin/sh", "sh ")):
                found[int(rank)] = p
    return found


def wait_until(check, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before {what}:\n{proc.stdout.read()[-4000:]}")
        assert time.monotonic() < deadline, f"not {what} within {timeout:.0f} s"
        time.sleep(0.05)


def _fill_unrecorded(steps: dict[int, dict[int, list[int]]], expected: list[np.ndarray], out: str) -> list[int]:
    """Steps the victim trained but whose id lines died with it; their record completed in ``steps``.

    A commit saves each rank's state and then writes its held id lines. A rank SIGKILLed between
    the two, after the commit's steps had run on both ranks, leaves the survivor's lines of those
    steps alone, though the survivor goes on from that very commit: they were trained on the whole
    global batch. Only steps of the commit the survivor restored may be so, at most
    ``COMMIT_EVERY``, and the survivor's lines must be exactly its rank's half of each batch; the
    victim's half is then filled in from the uninterrupted run, for the checks that follow.
    """
    found = re.search(r"rank 0 of 1 from step (\d+)", out)
    assert found, "the survivor never went on alone:\n" + out[-3000:]
    restored = int(found.group(1))
    gap = [s for s in range(1, restored + 1) if len(steps[s]) == 1]
    early = [s for s in gap if s <= restored - COMMIT_EVERY]
    assert not early, f"steps {early} recorded by one rank, before the commit the survivor restored ({restored})"
    for s in gap:
        (rank,) = steps[s]
        half = len(expected[s - 1]) // 2
        parts = [expected[s - 1][:half], expected[s - 1][half:]]
        assert np.array_equal(steps[s][rank], parts[rank]), f"step {s}: rank {rank}'s part is not its half of the batch"
        steps[s] = {r: list(p) for r, p in enumerate(parts)}
    return gap


@pytest.mark.timeout(180)
@pytest.mark.parametrize("victim", [1, 0])
def test_rank_killed_and_slot_added_mid_epoch_loses_and_repeats_nothing(tmp_path, victim):
    run_dir, start = tmp_path / "hvd", time.monotonic()
    proc = runs.start(tmp_path, "hvd", ITEMS, SETS)
    try:
        wait_until(lambda: len(committed(run_dir / "ids")) >= 6, proc, 60, "6 steps were committed")
        pid = ranks(tmp_path)[victim].pid
        killed_at = max(committed(run_dir / "ids"))
        os.kill(pid, signal.SIGKILL)

        def alone() -> bool:  # a step past the kill committed by one rank
            return any(len(r) == 1 for s, r in committed(run_dir / "ids").items() if s > killed_at)

        wait_until(alone, proc, 60, "the survivor committed a step alone")
        (run_dir / "elastic" / "slots").write_text("localhost:3\n")
        out, _ = proc.communicate(timeout=max(1.0, 170 - (time.monotonic() - start)))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-4000:]
    wait_gone(tmp_path)
    steps = committed(run_dir / "ids")
    expected = expected_batches(TOTAL)
    assert sorted(steps) == list(range(1, TOTAL + 1)), f"steps missing: {sorted(set(range(1, TOTAL + 1)) - set(steps))}"
    unrecorded = _fill_unrecorded(steps, expected, out)
    worlds = [len(steps[s]) for s in sorted(steps)]
    wrong = [s for s in steps if sorted(steps[s]) != list(range(len(steps[s])))]
    assert not wrong, f"steps not committed by ranks 0..n-1 of one world: {wrong[:5]}"
    wrong = [
        s for s in steps if not np.array_equal(np.concatenate([steps[s][r] for r in sorted(steps[s])]), expected[s - 1])
    ]
    assert not wrong, f"steps whose global batch differs from the uninterrupted run's: {wrong[:10]}"
    ids = np.concatenate([np.concatenate([steps[s][r] for r in sorted(steps[s])]) for s in sorted(steps)])
    for e in range(EPOCHS):
        counts = Counter(ids[e * EXAMPLES : (e + 1) * EXAMPLES].tolist())
        assert len(counts) == EXAMPLES and max(counts.values()) == 1, f"epoch {e}: an example missing or twice"
    solo = [s for s in sorted(steps) if len(steps[s]) == 1]
    assert worlds[0] == 2 and solo and worlds[-1] == 2, f"ranks per step: {worlds}"
    print("\n".join(line for line in out.splitlines() if "horovod elastic" in line or "exit with" in line))
    print(
        f"victim rank {victim}: killed after step {killed_at} (epoch {killed_at // 20 + 1}, step "
        f"{killed_at % 20} of 20); its id lines of steps {unrecorded or 'none'} lost with it; "
        f"steps {solo[0]}..{solo[-1]} on 1 rank, "
        f"2 ranks again from step {solo[-1] + 1}; {TOTAL} steps, {EPOCHS} epochs x {EXAMPLES} ids: "
        f"0 lost, 0 repeated ({time.monotonic() - start:.0f} s)"
    )


@pytest.mark.timeout(150)
def test_sigterm_to_an_elastic_launch_then_resume_on_three_ranks_is_exact(tmp_path):
    """Preemption under ELASTIC=1: the launch saves (rank 0) and exits 0 between two commits; the same
    command with NP=3 resumes from that checkpoint, and every step's global batch is the uninterrupted one."""
    total, start = 6 * EXAMPLES // BATCH, time.monotonic()
    items = [i if not i.startswith("EPOCHS=") else "EPOCHS=6" for i in ITEMS]
    sets = [*SETS, "strategy.commit_every=7"]  # a SIGTERM mostly lands between two commits
    run_dir = tmp_path / "hvd"
    proc = runs.start(tmp_path, "hvd", items, sets)
    try:
        wait_until(lambda: len(committed(run_dir / "ids")) >= 7, proc, 60, "7 steps were committed")
        proc.send_signal(signal.SIGTERM)  # the launcher relays it to the ranks
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0 and "SIGTERM: saved a checkpoint" in out, out[-4000:]
    wait_gone(tmp_path)
    first = committed(run_dir / "ids")
    (run_dir / "ids").rename(tmp_path / "ids_leg1")
    stopped = max(first)
    assert sorted(first) == list(range(1, stopped + 1)) and stopped < total
    metrics = runs.train(tmp_path, "hvd", [*items, "NP=3"], sets, timeout=max(10.0, 140 - (time.monotonic() - start)))
    assert metrics["resumed_from_step"] == stopped and metrics["steps"] == total and metrics["workers"] == 3
    second = committed(run_dir / "ids")
    assert sorted(second) == list(range(stopped + 1, total + 1))
    expected = expected_batches(total)
    steps = first | second
    wrong = [
        s for s in steps if not np.array_equal(np.concatenate([steps[s][r] for r in sorted(steps[s])]), expected[s - 1])
    ]
    assert not wrong, f"steps whose global batch differs from the uninterrupted run's: {wrong[:10]}"
    print(f"SIGTERM: stopped at step {stopped} on 2 ranks, resumed on 3 to {total}: 0 lost, 0 repeated")
