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
the pipeline is built (host) and its elements are produced on the workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import tensorflow as tf

from ingest.options import PipelineOptions
from stoker import ports, timing
from stoker.errors import StokerError

log = logging.getLogger(__name__)

MODES = {"dynamic": "distributed_epoch", "off": "parallel_epochs"}
_EXPOSURE = (
    "tf.data service (TensorFlow %s) listens on EVERY network interface whatever address it advertises "
    "(there is no bind setting) and has NO authentication: anyone who reaches ports %s can read the data "
    "or join as a worker. Run it on a private network or in a network namespace only."
)


class ServiceTimeoutError(StokerError, TimeoutError):
    """The tf.data service produced no element within ``pipeline.service_timeout_s``."""


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


def wait_listening(port: int, timeout_s: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until something accepts connections on ``127.0.0.1:port``; raise naming the port if not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
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

    def __init__(self, spec: ClusterSpec, *, quiet: bool = False) -> None:
        self.spec, self.quiet = spec, quiet
        self.dispatcher: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen | None] = [None] * spec.workers

    def _spawn(self, role: str, index: int = 0) -> subprocess.Popen:
        out = subprocess.DEVNULL if self.quiet else None
        return subprocess.Popen(_command(self.spec, role, index), stdout=out, stderr=out)  # noqa: S603

    def start_dispatcher(self) -> None:
        """Start (or restart, from the journal) the dispatcher and wait until it listens."""
        self.dispatcher = self._spawn("dispatcher")
        wait_listening(self.spec.port, proc=self.dispatcher)

    def start_worker(self, index: int) -> None:
        """Start (or restart, at the same port) worker ``index`` and wait until it listens."""
        self.workers[index] = self._spawn("worker", index)
        wait_listening(self.spec.worker_port(index), proc=self.workers[index])

    def kill_dispatcher(self) -> None:
        """SIGKILL the dispatcher (no clean shutdown: what a crash looks like)."""
        _kill(self.dispatcher)
        self.dispatcher = None

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker ``index``."""
        _kill(self.workers[index])
        self.workers[index] = None

    def start(self) -> LocalCluster:
        """Start the dispatcher, then every worker."""
        warn_exposure([self.spec.port] + [self.spec.worker_port(i) for i in range(self.spec.workers)])
        self.start_dispatcher()
        self.workers = [self._spawn("worker", i) for i in range(self.spec.workers)]  # start together
        for i, proc in enumerate(self.workers):
            wait_listening(self.spec.worker_port(i), proc=proc)
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


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def free_port(span: int = 1) -> int:
    """A port p on 127.0.0.1 with p..p+span-1 all free right now (for tests and benchmarks)."""
    return ports.free_ports(span, contiguous=True)[0]


# ---- client ------------------------------------------------------------------------------
def distribute(ds: tf.data.Dataset, options: PipelineOptions, *, job_name: str) -> tf.data.Dataset:
    """Run ``ds`` on the tf.data service at ``options.data_service``, bounded by a timeout.

    ``service_mode`` ``dynamic`` (``distributed_epoch``): the dispatcher hands out splits of
    the source files to workers, so one epoch is seen at most once (exactly once while workers
    stay up; splits in flight on a worker that dies are lost). ``off`` (``parallel_epochs``):
    every worker runs the whole pipeline. Every ``iter()`` starts its own job (named
    ``<job_name>-<random>``), so repeated evaluations never join a finished job.

    The service client retries forever when every worker is gone; here a ``next()`` that
    waits longer than ``service_timeout_s`` raises instead (a :class:`ServiceTimeoutError`
    message inside a ``tf.errors`` error). The service keeps no per-client position, so a
    checkpoint of the iterator saves no input position: it is written (the service part is
    skipped), and a restored iterator starts a new job.
    """
    spec = ds.element_spec
    flat = tf.nest.flatten(spec)

    def open_job(session: tf.Tensor, threads: list[threading.Thread]) -> Iterator:
        name = f"{job_name}-{uuid.uuid4().hex[:8]}"
        remote = ds.apply(
            tf.data.experimental.service.distribute(
                processing_mode=MODES[options.service_mode], service=options.data_service, job_name=name
            )
        )
        return _bounded(
            remote, timeout_s=options.service_timeout_s, where=f"{options.data_service} job {name}", threads=threads
        )

    def pull(session: tf.Tensor) -> list:
        key = int(session)
        if key not in _SESSIONS:  # a new iterator, or one restored from a checkpoint
            threads: list[threading.Thread] = []
            _SESSIONS[key] = (options.data_service, open_job(session, threads), threads)
        try:
            return [True, *tf.nest.flatten(next(_SESSIONS[key][1]))]
        except StopIteration:
            _SESSIONS.pop(key, None)
            return [False, *(tf.zeros([d or 0 for d in s.shape.as_list()], s.dtype) for s in flat)]
        except Exception:
            _SESSIONS.pop(key, None)  # a later next() opens a new job instead of ending silently
            raise

    def step(session: tf.Tensor):
        out = tf.py_function(pull, [session], [tf.bool, *(s.dtype for s in flat)])
        for tensor, s in zip(out[1:], flat, strict=True):
            tensor.set_shape(s.shape)
        return out[0], tuple(out[1:])

    def stream(session: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensors(session).repeat().map(step)

    # One session id per iterator (random: a restored id never meets a live one), then elements
    # until the job ends. Built from checkpointable datasets, unlike from_generator.
    sessions = tf.data.Dataset.from_tensors(0).map(
        lambda _: tf.py_function(lambda: uuid.uuid4().int >> 65, [], tf.int64)
    )
    out = sessions.flat_map(stream).take_while(lambda ok, _: ok)
    out = out.map(lambda _, values: tf.nest.pack_sequence_as(spec, list(values)))
    return out.with_options(_ignore_external_state())


# session id -> (dispatcher address, bounded element iterator of one service job, its pull thread)
_SESSIONS: dict[int, tuple[str, Iterator, list[threading.Thread]]] = {}


def close_sessions(address: str = "") -> int:
    """Close the service jobs this process still reads (those of ``address``, or all); returns how many.

    An iterator abandoned mid-epoch keeps its job's client alive, heartbeating to the dispatcher
    (and logging a failure every second once it is gone). Closing the session lets its pull
    thread return, which drops the service iterator and its client.
    """
    keys = [k for k, (where, _, _) in _SESSIONS.items() if not address or where == address]
    closing = []
    for key in keys:
        _, elements, threads = _SESSIONS.pop(key)
        try:
            elements.close()
        except ValueError:  # being read right now, in another thread: that read ends it
            continue
        closing += threads
    for thread in closing:  # each returns within its 0.5 s poll unless blocked in the service
        thread.join(timeout=5.0)
    return len(keys)


def _ignore_external_state() -> tf.data.Options:
    # The py_functions hold live service iterators, which no checkpoint can capture; IGNORE
    # lets the checkpoint of everything else be written (a restored iterator opens a new job).
    opts = tf.data.Options()
    opts.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return opts


_END = object()


def _bounded(
    ds: tf.data.Dataset, *, timeout_s: float, where: str, threads: list[threading.Thread] | None = None
) -> Iterator:
    """Elements of ``ds``; raises :class:`ServiceTimeoutError` when one takes over ``timeout_s``.

    A daemon thread pulls from the service (that call cannot be interrupted); the consumer
    waits on a one-element queue with a timeout. A timed-out pull thread stays blocked until
    the process exits.
    """
    box: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def pull() -> None:
        try:
            for element in ds:
                while not stop.is_set():
                    try:
                        box.put(element, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(_END)
        except Exception as err:  # noqa: BLE001 - handed to the consumer thread, re-raised there
            box.put(err)

    thread = threading.Thread(target=pull, name="tf.data-service-pull", daemon=True)
    if threads is not None:
        threads.append(thread)
    thread.start()
    try:
        while True:
            try:
                item = box.get(timeout=timeout_s)
            except queue.Empty:
                raise ServiceTimeoutError(
                    f"tf.data service at {where} gave no element for {timeout_s:g} s (pipeline.service_timeout_s): "
                    "are its workers up? Start them with `make data-service`, or raise "
                    "pipeline.service_timeout_s when the first element is slow"
                ) from None
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()


# ---- measurement (for benchmarks) ---------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Comparison:
    """Throughput of one pipeline run locally and on local service workers."""

    workers: int
    local_examples_per_s: float
    service_examples_per_s: float

    @property
    def ratio(self) -> float:
        """Service over local throughput (> 1: the service helped)."""
        return self.service_examples_per_s / self.local_examples_per_s


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
    ``ingest.pipeline.build(...).dataset``); it is called once without and once with
    ``data_service`` set. On one host the workers share its cores with the client, so a ratio
    near or below 1 is expected here; on other hosts the workers add their own cores.
    """
    local = _rate(make(dataclasses.replace(options, data_service="")), batches=batches, warmup=warmup)
    spec = ClusterSpec(
        workers=workers,
        port=free_port(workers + 1),
        work_dir=work_dir or tempfile.mkdtemp(prefix="stoker-data-service-"),
    )
    with LocalCluster(spec, quiet=True) as cluster:
        remote_options = dataclasses.replace(options, data_service=cluster.spec.address)
        remote = _rate(make(remote_options), batches=batches, warmup=warmup)
    return Comparison(workers, local, remote)


# ---- command line ------------------------------------------------------------------------
def _spec(args: argparse.Namespace) -> ClusterSpec:
    return ClusterSpec(
        workers=args.workers,
        host=args.host,
        port=args.port,
        work_dir=args.work_dir,
        **{k: getattr(args, k) for k in ("worker_timeout_ms", "heartbeat_ms") if hasattr(args, k)},
    )


def main(args: argparse.Namespace) -> int:
    """``make data-service``: run the cluster in the foreground until Ctrl-C or SIGTERM."""
    cluster = LocalCluster(_spec(args))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with cluster:
        log.info("tf.data service ready: DATA_SERVICE=%s (Ctrl-C stops it)", cluster.spec.address)
        try:
            while not stopping.wait(1.0):
                dead = [p for p in [cluster.dispatcher, *cluster.workers] if p is not None and p.poll() is not None]
                if dead:
                    log.error("a tf.data service process exited (code %s); stopping the rest", dead[0].returncode)
                    return 1
        except KeyboardInterrupt:
            log.info("stopping the tf.data service")
    return 0


def _serve(argv: list[str]) -> int:
    """``python -m ingest.service dispatcher|worker ...``: one server in this process."""
    p = argparse.ArgumentParser(prog="python -m ingest.service")
    p.add_argument("role", choices=["dispatcher", "worker"])
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5050)
    p.add_argument("--work-dir", default="runs/data_service")
    p.add_argument("--worker-timeout-ms", type=int, default=ClusterSpec.worker_timeout_ms)
    p.add_argument("--heartbeat-ms", type=int, default=ClusterSpec.heartbeat_ms)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    spec = _spec(args)
    if args.role == "dispatcher":
        serve_dispatcher(spec)
    else:
        serve_worker(spec, args.index)
    return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
