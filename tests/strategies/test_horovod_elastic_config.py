"""Horovod elastic without processes: bad configs name the key, local discovery, the horovodrun line,
and the id file that holds lines until a commit. The run itself: tests/training/test_horovod_elastic.py."""

from __future__ import annotations

import socket
import subprocess

import numpy as np
import pytest

from ingest import runconfig
from stoker.config import ConfigError
from stoker.errors import StokerError
from strategies import discovery, launch
from strategies.backend import StrategyOptions
from training import actions

ELASTIC = ["STRATEGY=horovod", "ELASTIC=1", "NP=2", "BATCH=24"]


@pytest.mark.parametrize(
    ("items", "named"),
    [
        (["STRATEGY=mirrored", "ELASTIC=1"], "ELASTIC=1"),
        ([*ELASTIC, "MIN_NP=3"], "MIN_NP"),
        ([*ELASTIC, "MIN_NP=0", "MAX_NP=1"], "MAX_NP"),
        (["STRATEGY=horovod", "MIN_NP=1"], "ELASTIC=1"),
        (["STRATEGY=horovod", "DISCOVERY=/x.sh"], "strategy.discovery"),
        ([*ELASTIC, "HOSTS=a:2,b:2"], "HOSTS"),
        (["STRATEGY=horovod", "ELASTIC=1", "NP=2", "MAX_NP=3", "BATCH=64"], "multiple of 6"),
    ],
)
def test_bad_elastic_configs_name_the_key(items, named):
    with pytest.raises(ConfigError, match=named):
        runconfig.from_args(items)


def test_an_elastic_config_resolves():
    s = runconfig.from_args([*ELASTIC, "MIN_NP=1", "MAX_NP=3"])
    assert s.strategy.elastic and s.strategy.np_range == (1, 3)
    assert StrategyOptions(name="horovod", processes=2, elastic=True).np_range == (2, 2)


def test_local_names_resolve_here_and_start_with_localhost():
    names = discovery.local_names()
    assert names[:2] == ["localhost", "127.0.0.1"]
    local = discovery._local_addresses()
    assert all(socket.gethostbyname(n) in local for n in names)


def test_localhost_slots_spread_over_names_and_other_hosts_pass():
    assert discovery.expand("localhost:3\n", ["a", "b"]) == ["a:2", "b:1"]
    assert discovery.expand("localhost:2\nnode7:4\n", ["a", "b", "c"]) == ["a:1", "b:1", "node7:4"]
    assert discovery.expand("", ["a"]) == []


def test_the_written_script_prints_the_slots_file(tmp_path):
    script, slots = discovery.write(tmp_path / "elastic", "localhost:2")
    first = subprocess.run([str(script)], capture_output=True, text=True, timeout=30, check=True).stdout.split()
    slots.write_text("localhost:3\n")
    second = subprocess.run([str(script)], capture_output=True, text=True, timeout=30, check=True).stdout.split()
    assert len(first) == min(2, len(discovery.local_names())) and first[0] == "localhost:1"
    assert second[: len(first)] == first and len(second) == min(3, len(discovery.local_names()))


def test_elastic_horovodrun_line():
    options = StrategyOptions(name="horovod", processes=2, elastic=True, min_processes=1, max_processes=3)
    cmd = launch.elastic_command(options, ["python", "-m", "training"], "/run/elastic/discover.sh")
    line = " ".join(cmd)
    assert "--gloo -np 2 --min-np 1 --max-np 3 --host-discovery-script /run/elastic/discover.sh" in line
    assert "--network-interfaces lo" in line and line.endswith("python -m training")
    given = StrategyOptions(name="horovod", processes=2, elastic=True, discovery="/site/hosts.sh")
    assert "--network-interfaces" not in launch.elastic_command(given, ["x"], "/site/hosts.sh")


def test_a_discovery_script_that_cannot_run_is_named(tmp_path):
    config = runconfig.from_args([*ELASTIC, f"DISCOVERY={tmp_path / 'missing.sh'}"])
    with pytest.raises(launch.LaunchError, match="DISCOVERY"):
        launch._horovod_line(config, ["x"])


def test_held_id_lines_reach_the_file_only_at_a_commit(tmp_path):
    ids = actions.IdRecorder(tmp_path, 1, True, hold=True)
    ids.record_ids(1, np.array([4, 5]))
    assert (tmp_path / "ids" / "worker_1.txt").read_text() == ""
    ids.commit()
    ids.record_ids(2, np.array([6, 7]))
    ids.reopen(0)  # renumbered after a reset: the uncommitted step 2 is dropped
    ids.record_ids(2, np.array([8, 9]))
    ids.commit()
    ids.close()
    assert (tmp_path / "ids" / "worker_1.txt").read_text() == "1 4 5\n"
    assert (tmp_path / "ids" / "worker_0.txt").read_text() == "2 8 9\n"


def test_an_input_not_addressed_by_position_is_refused_before_launch():
    from training import assembly

    config = runconfig.from_args([*ELASTIC, "CONFIG=tiny"], ["pipeline.iterator_checkpoint=true"])
    with pytest.raises(StokerError, match="pipeline.iterator_checkpoint=true"):
        assembly.prepare(config)
