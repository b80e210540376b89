"""The one way stoker starts and stops the processes a run needs (workers, servers, suites).

Three layers, so that no process outlives the run that started it, however the run ends:

- every child gets its own session (stopping it stops everything it started, as a process
  group) and, on Linux, ``PR_SET_PDEATHSIG``: it is sent SIGTERM when the thread that started
  it dies, even by SIGKILL. Start children from a thread that lives as long as they should (the
  main thread, here);
- every child, and everything it starts by any means, carries this run's mark in the
  environment variable ``STOKER_RUN`` (a colon-separated list: a nested launcher adds its own);
- the first child started also starts a watchdog: a small process in a session of its own that
  waits for the launcher to end, then sends SIGTERM to every process still carrying the mark and,
  ``WATCHDOG_GRACE_S`` later, SIGKILL. It catches what the first two layers miss: descendants
  that leave the session (Horovod's middlemen call ``setsid``) and launchers such as
  ``horovodrun`` that take SIGTERM as a request and are slow to act on it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

PR_SET_PDEATHSIG = 1  # prctl option: signal sent to this process when its parent dies
RUN_MARK = "STOKER_RUN"
WATCHDOG_GRACE_S = 4.0  # from SIGTERM to SIGKILL once the launcher is gone (the whole sweep ends within 10 s)

_guard: dict[str, Any] = {"mark": None, "watchdog": None}
_guard_lock = threading.Lock()


def _die_with(parent: int):
    """In the child before exec (Linux): SIGTERM when the parent dies; exit at once if it already has."""

    def prepare() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # not Linux: the watchdog alone covers a killed parent
            return
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody would signal us
            os._exit(1)

    return prepare


def guard() -> str:
    """Mark this process's future children as this run's and start the watchdog (once); returns the mark.

    Called by ``spawn``; a launcher whose children come from elsewhere (Beam's DirectRunner
    workers) calls it before starting them.
    """
    with _guard_lock:
        if _guard["mark"] is None:
            mark = uuid.uuid4().hex[:12]
            env = {k: v for k, v in os.environ.items() if k != RUN_MARK}
            code = "import sys; from stoker.processes import watch; watch(int(sys.argv[1]), sys.argv[2])"
            _guard["watchdog"] = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                [sys.executable, "-c", code, str(os.getpid()), mark],
                stdin=subprocess.PIPE,  # never written: its end of file says this process is gone
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
            inherited = os.environ.get(RUN_MARK)
            os.environ[RUN_MARK] = f"{inherited}:{mark}" if inherited else mark
            _guard["mark"] = mark
        return _guard["mark"]


def watchdog_pid() -> int | None:
    """This process's watchdog, once ``guard`` has started it (it carries the parent's environment)."""
    return _guard["watchdog"].pid if _guard["watchdog"] is not None else None


def spawn(cmd: Sequence[str], **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen(cmd, **popen)`` in a new session that dies with its parent, under the watchdog."""
    guard()
    if popen.get("env") is not None:
        popen["env"] = dict(popen["env"], **{RUN_MARK: os.environ[RUN_MARK]})
    return subprocess.Popen(  # noqa: S603, PLW1509 (only prctl runs before exec)
        list(cmd), start_new_session=True, preexec_fn=_die_with(os.getpid()), **popen
    )


def marked(var: str, mark: str) -> list:
    """Live processes other than this one and its ancestors whose ``var`` lists ``mark`` (``:``-separated)."""
    import psutil

    skip = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    out = []
    for proc in psutil.process_iter():
        try:
            if proc.pid not in skip and mark in proc.environ().get(var, "").split(":"):
                out.append(proc)
        except (psutil.Error, OSError):
            continue
    return out


def kill_lingering(find: Callable[[], list], seconds: float = 10.0) -> list[str]:
    """Wait up to ``seconds`` for ``find()`` (e.g. :func:`marked`) to return nothing; SIGKILL what it
    still returns then, and describe each ("pid N (status): command line")."""
    import psutil

    deadline = time.monotonic() + seconds
    while (left := find()) and time.monotonic() < deadline:
        time.sleep(0.2)
    out = []
    for proc in left:
        try:
            out.append(f"pid {proc.pid} ({proc.status()}): {' '.join(proc.cmdline())[:200]}")
            proc.kill()
        except psutil.Error:
            continue
    return out


def _signal_all(procs: Sequence, sig: int) -> None:
    import psutil

    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def watch(launcher: int, mark: str) -> None:
    """The watchdog's body: wait for ``launcher`` to end, then end every process carrying ``mark``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the run; the watchdog cleans up after it
    while os.getppid() == launcher:
        ready, _, _ = select.select([sys.stdin], [], [], 1.0)
        if ready and not os.read(sys.stdin.fileno(), 1):
            break
    left = marked(RUN_MARK, mark)
    _signal_all(left, signal.SIGTERM)
    deadline = time.monotonic() + WATCHDOG_GRACE_S
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = marked(RUN_MARK, mark)
    quiet = 0
    while quiet < 2:  # SIGKILL until two scans in a row find nothing (a dying parent may still be forking)
        left = marked(RUN_MARK, mark)
        _signal_all(left, signal.SIGKILL)
        quiet = 0 if left else quiet + 1
        time.sleep(0.2)


def _tree(procs: Sequence[subprocess.Popen]) -> list:
    """Every live descendant of ``procs``, wherever its session (a child may have called setsid)."""
    import psutil

    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            out += psutil.Process(p.pid).children(recursive=True)
    return out


def stop(procs: Sequence[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM every live process group and descendant, then SIGKILL what is left after ``grace_s``."""
    seen: dict[int, Any] = {}
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        live = [p for p in procs if p.poll() is None]
        seen.update((d.pid, d) for d in _tree(live))  # before signalling: an ended parent hides its orphans
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        _signal_all(list(seen.values()), sig)
        deadline = time.monotonic() + wait
        while any(p.poll() is None for p in live) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not live and not any(_running(d) for d in seen.values()):
            return


def _running(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill(proc: subprocess.Popen | None) -> None:
    """SIGKILL ``proc``'s process group at once (what a crash looks like) and reap it."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
