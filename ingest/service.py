"""tf.data service: run a dispatcher and workers, and send a pipeline's preprocessing to them.

``make data-service WORKERS=2`` (``python -m ingest service``) starts one dispatcher in
fault-tolerant mode (its journal lives in ``--work-dir``, so a restarted dispatcher
continues its jobs) and N workers, each in its own process, advertising ``127.0.0.1``
addresses by default. ``make train DATA_SERVICE=grpc://127.0.0.1:5050`` then runs the
pipeline's stages up to ``with_options`` on the workers (:func:`distribute`).

Security: TensorFlow 2.16's servers listen on every interface (the IPv6 wildcard) whatever
address they advertise, have no bind-address setting and no authentication. Anyone who
reaches a port can register workers or read the data. Run the service on a private network
or in a network namespace only; :func:`warn_exposure` says so at start.

Where it runs: the servers run in their own processes (host); :func:`distribute` runs when
the pipeline is built (host) and its elements are produced on the workers. The client side
lives in ``ingest.service_client`` (re-exported here).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf

from ingest.options import PipelineOptions
from ingest.service_client import MODES, ServiceTimeoutError, close_sessions, distribute
from stoker import ports, processes, timing
from stoker.errors import StokerError

log = logging.getLogger(__name__)
__all__ = [
    "MODES",
    "ClusterSpec",
    "ClusterStopped",
    "LocalCluster",
    "ServiceTimeoutError",
    "close_sessions",
    "compare",
    "distribute",
]

_EXPOSURE = (
    "tf.data service (TensorFlow %s) listens on EVERY network interface whatever address it advertises "
    "(there is no bind setting) and has NO authentication: anyone who reaches ports %s can read the data "
    "or join as a worker. Run it on a private network or in a network namespace only."
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    """Where the dispatcher and workers listen and what they advertise."""

    workers: int = 2  # worker processes
    host: str = "127.0.0.1"  # address the servers advertise (they listen on every interface regardless)
    port: int = 5050  # dispatcher port; worker i uses port + 1 + i
    work_dir: str = "runs/data_service"  # dispatcher journal (fault-tolerant mode)
    worker_timeout_ms: int = 10_000  # dispatcher drops a worker silent this long (its splits in flight are lost)
    heartbeat_ms: int = 1_000  # worker heartbeat period

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers={self.workers} must be >= 0")
        if not 0 < self.port < 65536 - self.workers - 1:
            raise ValueError(f"port={self.port}: need a port in 1..{65534 - self.workers} (workers use port+1..)")
        if not self.host:
            raise ValueError("host is empty: give the address clients and workers reach (127.0.0.1 locally)")

    @property
    def dispatcher(self) -> str:
        """``host:port`` of the dispatcher (what workers dial)."""
        return f"{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """``grpc://host:port``: the value of ``DATA_SERVICE=``."""
        return f"grpc://{self.dispatcher}"

    def worker_port(self, index: int) -> int:
        """Port of worker ``index``; fixed, so a restarted worker comes back at the same address."""
        return self.port + 1 + index


def warn_exposure(ports: list[int]) -> None:
    """Log, loudly, that the servers are reachable on every interface without authentication."""
    log.warning(_EXPOSURE, tf.__version__, ", ".join(str(p) for p in ports))


# ---- servers (each in its own process) ----------------------------------------------------
def serve_dispatcher(spec: ClusterSpec) -> None:
    """Run a fault-tolerant dispatcher until the process is stopped (blocks)."""
    Path(spec.work_dir).mkdir(parents=True, exist_ok=True)
    config = tf.data.experimental.service.DispatcherConfig(
        port=spec.port, work_dir=spec.work_dir, fault_tolerant_mode=True, worker_timeout_ms=spec.worker_timeout_ms
    )
    server = tf.data.experimental.service.DispatchServer(config)
    log.info("dispatcher at %s, journal in %s", spec.address, spec.work_dir)
    server.join()


def serve_worker(spec: ClusterSpec, index: int) -> None:
    """Run worker ``index`` against the spec's dispatcher until the process is stopped (blocks)."""
    port = spec.worker_port(index)
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=spec.dispatcher,
        worker_address=f"{spec.host}:{port}",
        port=port,
        heartbeat_interval_ms=spec.heartbeat_ms,
    )
    server = tf.data.experimental.service.WorkerServer(config)
    log.info("worker %d at %s:%d (dispatcher %s)", index, spec.host, port, spec.dispatcher)
    server.join()


def _command(spec: ClusterSpec, role: str, index: int = 0) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ingest.service",
        role,
        "--index",
        str(index),
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "--work-dir",
        spec.work_dir,
        "--workers",
        str(spec.workers),
        "--worker-timeout-ms",
        str(spec.worker_timeout_ms),
        "--heartbeat-ms",
        str(spec.heartbeat_ms),
    ]


def restart_loss_bound(options: PipelineOptions | None = None) -> int:
    """Files (splits) one worker's SIGKILL and restart may lose in a dynamic epoch, as measured here.

    TensorFlow documents only at-most-once. The killed worker's splits in flight (its parallel
    interleave holds cycle_length open files and as many prefetched) plus as many on the restarted
    worker, at the same address, which opens and prefetches splits before the client reattaches to
    it. 3 x cycle_length held on a quiet machine; the fresh-clone CI of 2026-12-03, on a loaded
    one, lost 16 files = 4 x. ``tests/ingest/test_service.py`` holds the scenario to it and
    ``python -m benchmarks.measure service`` counts the scenario's losses against it.
    """
    return 4 * (options or PipelineOptions(preset="optimized")).cycle_length


class ClusterStopped(StokerError):
    """A stop was asked for (Ctrl-C, SIGTERM) while the cluster was starting."""


def wait_listening(
    port: int, timeout_s: float = 120.0, proc: subprocess.Popen | None = None, stop: threading.Event | None = None
) -> None:
    """Wait until something accepts connections on ``127.0.0.1:port``; raise naming the port if not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            raise ClusterStopped(f"stopped while waiting for port {port}")
        if proc is not None and proc.poll() is not None:
            raise StokerError(
                f"tf.data service process for port {port} exited with code {proc.returncode}; "
                "see its log above (port already in use?)"
            )
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise StokerError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s; is the port taken?")


class LocalCluster:
    """A dispatcher and workers as child processes, each one killable and restartable.

    Used by ``make data-service``, by tests (fault injection) and by benchmarks::

        with LocalCluster(ClusterSpec(workers=2, port=free_port())) as cluster:
            options = PipelineOptions(data_service=cluster.spec.address)
    """

    def __init__(self, spec: ClusterSpec, *, quiet: bool = False, stop: threading.Event | None = None) -> None:
        self.spec, self.quiet, self.stop_event = spec, quiet, stop
        self.dispatcher: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen | None] = [None] * spec.workers

    def _spawn(self, role: str, index: int = 0) -> subprocess.Popen:
        out = subprocess.DEVNULL if self.quiet else None
        return processes.spawn(_command(self.spec, role, index), stdout=out, stderr=out)

    def start_dispatcher(self) -> None:
        """Start (or restart, from the journal) the dispatcher and wait until it listens."""
        self.dispatcher = self._spawn("dispatcher")
        wait_listening(self.spec.port, proc=self.dispatcher, stop=self.stop_event)

    def start_worker(self, index: int) -> None:
        """Start (or restart, at the same port) worker ``index`` and wait until it listens."""
        self.workers[index] = self._spawn("worker", index)
        wait_listening(self.spec.worker_port(index), proc=self.workers[index], stop=self.stop_event)

    def kill_dispatcher(self) -> None:
        """SIGKILL the dispatcher (no clean shutdown: what a crash looks like)."""
        processes.kill(self.dispatcher)
        self.dispatcher = None

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker ``index``."""
        processes.kill(self.workers[index])
        self.workers[index] = None

    def start(self) -> LocalCluster:
        """Start the dispatcher, then every worker."""
        warn_exposure([self.spec.port] + [self.spec.worker_port(i) for i in range(self.spec.workers)])
        self.start_dispatcher()
        for i in range(self.spec.workers):  # start together; each tracked as soon as it exists
            self.workers[i] = self._spawn("worker", i)
        for i, proc in enumerate(self.workers):
            wait_listening(self.spec.worker_port(i), proc=proc, stop=self.stop_event)
        return self

    def stop(self) -> None:
        """Close this process's jobs on the cluster, then stop every process it started (workers first)."""
        close_sessions(self.spec.address)
        for i in range(len(self.workers)):
            self.kill_worker(i)
        self.kill_dispatcher()

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(span: int = 1) -> int:
    """A port p on 127.0.0.1 with p..p+span-1 all free right now (for tests and benchmarks)."""
    return ports.free_ports(span, contiguous=True)[0]


# ---- measurement (for benchmarks) ---------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Comparison:
    """Throughput of one pipeline run locally and on local service workers (at most once, exactly once)."""

    workers: int
    local_examples_per_s: float
    service_examples_per_s: float  # pipeline.service_exactly_once=false: TensorFlow's at-most-once
    exactly_once_examples_per_s: float = float("nan")  # the default: ingest.service_once

    @property
    def ratio(self) -> float:
        """Service (at most once) over local throughput (> 1: the service helped)."""
        return self.service_examples_per_s / self.local_examples_per_s

    @property
    def exactly_once_ratio(self) -> float:
        """Exactly once over at most once on the same workers (< 1: what the ledger and client batching cost)."""
        return self.exactly_once_examples_per_s / self.service_examples_per_s


def _rate(ds: tf.data.Dataset, *, batches: int, warmup: int) -> float:
    """Examples per second over ``batches`` batches after ``warmup`` (the first of them timed apart)."""
    return timing.measure(
        lambda: iter(ds),
        elements=batches,
        reps=1,
        warmup=0,
        warmup_elements=max(0, warmup - 1),
        size_of=lambda batch: int(tf.nest.flatten(batch)[0].shape[0]),
    ).median


def compare(
    make: Callable[[PipelineOptions], tf.data.Dataset],
    options: PipelineOptions,
    *,
    workers: int = 2,
    batches: int = 50,
    warmup: int = 5,
    work_dir: str | None = None,
) -> Comparison:
    """Examples/s of ``make(options)`` locally, then with ``workers`` service workers on 127.0.0.1.

    ``make`` builds a repeated, batched dataset from pipeline options (e.g. a lambda around
    ``ingest.pipeline.build(...).dataset``); it is called without ``data_service``, then with it
    at most once (``service_exactly_once=false``) and exactly once, on the same workers. On one
    host the workers share its cores with the client, so a ratio near or below 1 is expected
    here; on other hosts the workers add their own cores.
    """
    local = _rate(make(dataclasses.replace(options, data_service="")), batches=batches, warmup=warmup)
    spec = ClusterSpec(
        workers=workers,
        port=free_port(workers + 1),
        work_dir=work_dir or tempfile.mkdtemp(prefix="stoker-data-service-"),
    )
    with LocalCluster(spec, quiet=True) as cluster:
        remote_options = dataclasses.replace(options, data_service=cluster.spec.address, service_exactly_once=False)
        remote = _rate(make(remote_options), batches=batches, warmup=warmup)
        close_sessions(cluster.spec.address)  # its job would go on taking the workers' time
        once_options = dataclasses.replace(remote_options, service_exactly_once=True)
        once = _rate(make(once_options), batches=batches, warmup=warmup)
    return Comparison(workers, local, remote, once)


if __name__ == "__main__":  # `python -m ingest.service dispatcher|worker ...` (a cluster's servers)
    from ingest import service_cli

    sys.exit(service_cli.serve(sys.argv[1:]))
