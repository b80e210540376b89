"""Local launches: generated TF_CONFIGs, the horovodrun line, and a supervisor that stops
every worker when one dies (real processes)."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from strategies import launch
from strategies.backend import StrategyOptions
from tests.training.runs import REPO


def test_tf_configs_name_every_worker_on_localhost():
    configs = [json.loads(c) for c in launch.tf_configs(3)]
    workers = configs[0]["cluster"]["worker"]
    assert len(set(workers)) == 3 and all(w.startswith("127.0.0.1:") for w in workers)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)
    assert json.loads(launch.tf_configs(2, first_port=23456)[1])["cluster"]["worker"][1] == "127.0.0.1:23457"


def test_needs_launch_only_outside_a_worker(monkeypatch):
    for var in ("TF_CONFIG", "HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert launch.needs_launch(StrategyOptions(name="multi_worker"))
    assert launch.needs_launch(StrategyOptions(name="horovod"))
    assert not launch.needs_launch(StrategyOptions(name="mirrored"))
    monkeypatch.setenv("TF_CONFIG", "{}")
    monkeypatch.setenv("HOROVOD_RANK", "0")
    assert not launch.needs_launch(StrategyOptions(name="multi_worker"))
    assert not launch.needs_launch(StrategyOptions(name="horovod"))


def test_horovod_command_defaults_to_localhost_and_passes_hosts():
    cmd = launch.horovod_command(StrategyOptions(name="horovod", processes=2), ["python", "-m", "training"])
    assert cmd[1:6] == ["--gloo", "-np", "2", "-H", "localhost:2"] and cmd[-3:] == ["python", "-m", "training"]
    cmd = launch.horovod_command(StrategyOptions(name="horovod", processes=8, hosts="a:4,b:4"), ["x"])
    assert cmd[cmd.index("-H") + 1] == "a:4,b:4"


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_supervise_prefixes_output_and_succeeds(capsys):
    code = launch.supervise(
        [_py("print('hello')"), _py("print('there')")], [dict(os.environ)] * 2, names=["worker 0", "worker 1"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "[worker 0] hello" in out and "[worker 1] there" in out


@pytest.mark.timeout(60)
def test_one_worker_dies_the_others_are_stopped(tmp_path):
    pid_file = tmp_path / "pid"
    sleeper = _py(f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(300)")
    dies = _py("import time, sys; time.sleep(1); sys.exit(3)")
    start = time.monotonic()
    code = launch.supervise([sleeper, dies], [dict(os.environ)] * 2, names=["worker 0", "worker 1"], grace_s=2)
    assert code == 3 and time.monotonic() - start < 30
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


@pytest.mark.timeout(60)
def test_workers_stop_when_the_launcher_is_killed(tmp_path):
    """SIGKILL to the launcher (no chance to clean up) still stops its workers."""
    import signal
    import subprocess

    pid_file = tmp_path / "pid"
    sleeper = _py(f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(300)")
    code = (
        f"import os; from strategies import launch; "
        f"launch.supervise([{sleeper!r}], [dict(os.environ)], names=['worker 0'])"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.1)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=10)
        worker = int(pid_file.read_text())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its SIGKILLed launcher")
    finally:
        if launcher.poll() is None:
            launcher.kill()


def test_watchdog_ends_descendants_that_left_the_session_and_ignore_sigterm(tmp_path):
    """What PR_SET_PDEATHSIG cannot reach (a grandchild that called setsid and ignores SIGTERM, as
    Horovod's middlemen and a busy horovodrun can be) the watchdog ends once the launcher is gone."""
    import signal
    import subprocess
    import uuid

    from stoker import processes

    pid_file = tmp_path / "pid"
    stubborn = (
        "import os, signal, time; os.setsid(); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    )
    child = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {stubborn!r}]); time.sleep(300)"
    code = (
        "import sys, time; from stoker import processes; "
        f"processes.spawn([sys.executable, '-c', {child!r}]); time.sleep(300)"
    )
    mark = uuid.uuid4().hex
    env = dict(os.environ, PYTHONPATH=str(REPO), TEST_MARK=mark)
    launcher = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the grandchild never started"
            time.sleep(0.1)
        assert len(processes.marked("TEST_MARK", mark)) == 4  # launcher, watchdog, child, grandchild
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (left := processes.marked("TEST_MARK", mark)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for p in left:
            p.kill()
        assert not left, f"left 10 s after the launcher's SIGKILL: {[' '.join(p.cmdline())[:80] for p in left]}"
    finally:
        if launcher.poll() is None:
            launcher.kill()
