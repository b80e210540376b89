"""The one way stoker starts and stops the processes a run needs (workers, servers, suites).

Every child gets its own session (so stopping it stops everything it started, as a process
group) and, on Linux, ``PR_SET_PDEATHSIG``: it is sent SIGTERM when the thread that started
it dies, even by SIGKILL, so a killed launcher leaves no child behind. Start children from a
thread that lives as long as they should (the main thread, here).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

PR_SET_PDEATHSIG = 1  # prctl option: signal sent to this process when its parent dies


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the parent dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a child outlives a killed parent
        pass


def spawn(cmd: Sequence[str], **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen(cmd, **popen)`` in a new session that dies with its parent."""
    return subprocess.Popen(  # noqa: S603, PLW1509 (only prctl runs before exec)
        list(cmd), start_new_session=True, preexec_fn=_die_with_parent, **popen
    )


def stop(procs: Sequence[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM every live process group, then SIGKILL what is left after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        live = [p for p in procs if p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        deadline = time.monotonic() + wait
        while any(p.poll() is None for p in live) and time.monotonic() < deadline:
            time.sleep(0.1)


def kill(proc: subprocess.Popen | None) -> None:
    """SIGKILL ``proc``'s process group at once (what a crash looks like) and reap it."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
