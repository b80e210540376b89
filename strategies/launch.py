"""Local launches of the multi-process backends: multi_worker (TF_CONFIG) and horovod (horovodrun).

Runs on the host that typed ``make train``. ``multi_worker`` starts NP worker processes of
the same command on 127.0.0.1 with free ports and a generated ``TF_CONFIG`` each;
``horovod`` hands the same command to ``horovodrun --gloo``. On a real cluster the user sets
``TF_CONFIG`` on each host (or runs ``horovodrun -H``) and nothing is launched here.

The supervisor prefixes every line a worker prints with ``[worker i]``, waits for all of
them, and when one fails it stops the others and reports which one failed: a dead peer
would otherwise leave the rest blocked in a collective.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from stoker import cli, ports, processes
from stoker.errors import StokerError
from strategies.backend import StrategyOptions

log = logging.getLogger(__name__)

# Set by horovodrun (Gloo) and mpirun in each rank: such a process is a worker, not a launcher.
_RANK_VARS = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
GRACE_S = 10.0  # after one worker fails, the others get this long to stop before SIGKILL
INTERRUPT_GRACE_S = 5.0  # after Ctrl-C, workers get this long to checkpoint before the whole tree is killed


class LaunchError(StokerError, RuntimeError):
    """A launched worker failed or the launch could not start."""


def needs_launch(options: StrategyOptions) -> bool:
    """True when this process should start the workers instead of being one (host)."""
    if options.name == "multi_worker":
        return "TF_CONFIG" not in os.environ
    if options.name == "horovod":
        return not any(v in os.environ for v in _RANK_VARS)
    return False


def tf_configs(processes: int, first_port: int = 0, host: str = "127.0.0.1") -> list[str]:
    """One ``TF_CONFIG`` JSON per local worker; ports from ``first_port`` or free ones."""
    chosen = [first_port + i for i in range(processes)] if first_port else ports.free_ports(processes, host=host)
    cluster = {"worker": [f"{host}:{p}" for p in chosen]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(processes)]


def horovod_command(options: StrategyOptions, cmd: list[str]) -> list[str]:
    """``horovodrun --gloo`` over ``HOSTS`` (default ``localhost:NP``) running ``cmd``."""
    horovodrun = _horovodrun()
    hosts = options.hosts or f"localhost:{options.processes}"
    return [
        horovodrun,
        "--gloo",
        "-np",
        str(options.processes),
        "-H",
        hosts,
        "--start-timeout",
        str(int(options.collective_timeout_s)),
        *cmd,
    ]


def _horovodrun() -> str:
    horovodrun = shutil.which("horovodrun") or os.path.join(os.path.dirname(sys.executable), "horovodrun")
    if not os.path.exists(horovodrun):
        raise LaunchError("horovodrun not found next to this Python; run `make setup` (it builds Horovod with Gloo)")
    return horovodrun


def elastic_command(options: StrategyOptions, cmd: list[str], script: str) -> list[str]:
    """``horovodrun --gloo`` with ``--min-np/--max-np`` and a host discovery ``script`` (elastic)."""
    low, high = options.np_range
    local = [] if options.discovery else ["--network-interfaces", "lo"]  # all slots here: Gloo on 127.0.0.1
    return [
        _horovodrun(),
        "--gloo",
        "-np",
        str(options.processes),
        "--min-np",
        str(low),
        "--max-np",
        str(high),
        "--host-discovery-script",
        script,
        *local,
        "--start-timeout",
        str(int(options.collective_timeout_s)),
        "--elastic-timeout",
        str(int(options.collective_timeout_s)),
        *cmd,
    ]


def _horovod_line(config: Any, cmd: list[str]) -> list[str]:
    """The horovodrun line for ``config``: elastic ones get stoker's discovery unless DISCOVERY= names one."""
    options: StrategyOptions = config.strategy
    if not options.elastic:
        return horovod_command(options, cmd)
    script = options.discovery
    if not script:
        from strategies import discovery

        path, slots = discovery.write(config.run_dir / "elastic", f"localhost:{options.processes}")
        script = str(path)
        log.info("horovod elastic: slots in %s (edit it to add or remove slots while the run trains)", slots)
    elif not os.access(script, os.X_OK):
        raise LaunchError(f"strategy.discovery={script!r} (DISCOVERY) is not an executable file; chmod +x it")
    return elastic_command(options, cmd, script)


def launch(config: Any, cmd: list[str]) -> int:
    """Host: start ``cmd`` as the workers of ``config.strategy`` and supervise them; returns the
    exit code. ``cmd`` is what each worker runs (the caller's own command line, e.g.
    ``python -m training ...``); a SIGTERM is relayed to the processes that run it."""
    options: StrategyOptions = config.strategy
    settle = options.collective_timeout_s + 120.0  # the last evaluation plus a collective timeout
    if options.name == "horovod":
        log.info(
            "horovod: launching %d ranks with horovodrun --gloo (hosts: %s%s)",
            options.processes,
            "given by HOSTS" if options.hosts else "by DISCOVERY" if options.discovery else "this machine",
            ", elastic {}..{}".format(*options.np_range) if options.elastic else "",
        )
        return supervise(
            [_horovod_line(config, cmd)],
            [dict(os.environ)],
            names=["horovodrun"],
            settle_s=settle,
            worker=cmd,
            preempt_s=options.preempt_grace_s,
        )
    configs = tf_configs(options.processes, options.port)
    envs = [dict(os.environ, TF_CONFIG=c) for c in configs]
    log.info(
        "multi_worker: launching %d local workers on 127.0.0.1 (TF_CONFIG generated, not logged)", options.processes
    )
    names = [f"worker {i}" for i in range(options.processes)]
    return supervise(
        [cmd] * options.processes, envs, names=names, settle_s=settle, worker=cmd, preempt_s=options.preempt_grace_s
    )


def _pump(stream, prefix: str) -> None:
    """Copy a worker's output to ours, one prefixed line at a time (runs in a thread)."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace")
        if cli.is_noise(line):
            continue
        sys.stdout.write(f"[{prefix}] {line}")
        sys.stdout.flush()
    stream.close()


def _preempt(procs: list[subprocess.Popen], grace_s: float, worker: Sequence[str] = ()) -> None:
    """SIGTERM the training processes themselves and wait for them to checkpoint and exit.

    Under horovodrun they are its descendants: signalling horovodrun instead makes it SIGKILL
    the ranks before they can save.
    """
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            kids = psutil.Process(p.pid).children(recursive=True)
            # the worker processes only (running `worker`): a shell wrapper dies of SIGTERM without saving
            workers = [k for k in kids if worker and k.cmdline()[1:3] == list(worker[1:3])] or [psutil.Process(p.pid)]
            for w in workers:
                w.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)


def supervise(
    cmds: Sequence[list[str]],
    envs: Sequence[dict[str, str]],
    *,
    names: Sequence[str],
    timeout_s: float = 0.0,
    settle_s: float = 300.0,
    grace_s: float = GRACE_S,
    worker: Sequence[str] = (),
    preempt_s: float = 7.0,
) -> int:
    """Host: run ``cmds`` at once, prefix their output, and return 0 only if every one succeeds.

    When one exits non-zero, when ``timeout_s`` > 0 passes, or when the others are still
    running ``settle_s`` after one finished, the rest are stopped and a message names the
    worker. SIGINT/SIGTERM to this process stop the workers too: they get SIGTERM and
    ``preempt_s`` (Ctrl-C: ``INTERRUPT_GRACE_S``) to save at a step boundary and exit, then the
    whole tree is killed.
    """
    procs = [
        processes.spawn(c, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for c, e in zip(cmds, envs, strict=True)
    ]
    pumps = [threading.Thread(target=_pump, args=(p.stdout, n), daemon=True) for p, n in zip(procs, names, strict=True)]
    for t in pumps:
        t.start()
    stopping = {"signal": 0}

    def on_signal(signum, _frame):
        stopping["signal"] = signum

    old = {s: _swap_handler(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = _wait(procs, names, (timeout_s, settle_s), stopping)
    finally:
        if stopping["signal"]:  # the workers themselves get SIGTERM: they save at a step boundary and exit
            interrupted = stopping["signal"] != signal.SIGTERM  # Ctrl-C: sooner
            _preempt(procs, INTERRUPT_GRACE_S if interrupted else preempt_s, worker)
            if any(p.poll() is None for p in procs):
                log.warning(
                    "workers still saving %.0f s after the signal: killing them (the run resumes from its last "
                    "complete checkpoint; strategy.preempt_grace_s gives them longer)",
                    INTERRUPT_GRACE_S if interrupted else preempt_s,
                )
            grace_s = 1.0  # then the whole tree is killed
        processes.stop(procs, grace_s)
        for s, h in old.items():
            _swap_handler(s, h)
        for t in pumps:
            t.join(timeout=5)
    if stopping["signal"] == signal.SIGTERM and all(p.returncode == 0 for p in procs):
        log.warning("SIGTERM: every worker saved a checkpoint and exited; run the same command again to resume")
        return 0
    return code


def _swap_handler(sig: int, handler: Any) -> Any:
    try:
        return signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _wait(
    procs: list[subprocess.Popen], names: Sequence[str], bounds: tuple[float, float], stopping: dict[str, int]
) -> int:
    """Poll until all succeed (0), one fails (its code), a bound passes or a signal arrives."""
    timeout_s, settle_s = bounds
    start, first_done = time.monotonic(), None
    while True:
        codes = [p.poll() for p in procs]
        failed = [(n, c) for n, c in zip(names, codes, strict=True) if c not in (None, 0)]
        if failed:
            name, code = failed[0]
            log.error(
                "%s exited with code %d; stopping the other %d worker(s). Its output above (prefixed [%s]) says why",
                name,
                code,
                sum(c is None for c in codes),
                name,
            )
            return code if code > 0 else 1
        if all(c == 0 for c in codes):
            return 0
        if stopping["signal"]:
            log.warning("signal %d: stopping the workers (each saves a checkpoint on SIGTERM)", stopping["signal"])
            return 128 + stopping["signal"]
        if timeout_s and time.monotonic() - start > timeout_s:
            log.error("workers still running after %.0f s; stopping them", timeout_s)
            return 1
        if first_done is None and 0 in codes:
            first_done = time.monotonic()
        if first_done is not None and time.monotonic() - first_done > settle_s:
            stuck = [n for n, c in zip(names, codes, strict=True) if c is None]
            log.error(
                "%s still running %.0f s after another worker finished (a peer is likely blocked in a "
                "collective); stopping it",
                ", ".join(stuck),
                settle_s,
            )
            return 1
        time.sleep(0.2)
