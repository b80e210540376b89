"""The tf.data service's command lines: ``make data-service`` (``python -m ingest service``) and
one server per process (``python -m ingest.service dispatcher|worker ...``, what
``LocalCluster`` and a multi-host setup start). Every default comes from ``ClusterSpec``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from ingest.service import ClusterSpec, ClusterStopped, LocalCluster, serve_dispatcher, serve_worker

log = logging.getLogger("ingest.service")


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    """The cluster's flags, defaults from :class:`ClusterSpec` (written there only)."""
    p.add_argument("--workers", type=int, default=ClusterSpec.workers, help="worker processes")
    p.add_argument("--host", default=ClusterSpec.host, help="address the servers advertise")
    p.add_argument("--port", type=int, default=ClusterSpec.port, help="dispatcher port; worker i uses port + 1 + i")
    p.add_argument("--work-dir", default=ClusterSpec.work_dir, help="dispatcher journal")
    p.add_argument("--worker-timeout-ms", type=int, default=ClusterSpec.worker_timeout_ms)
    p.add_argument("--heartbeat-ms", type=int, default=ClusterSpec.heartbeat_ms)


def spec_of(args: argparse.Namespace) -> ClusterSpec:
    return ClusterSpec(
        workers=args.workers,
        host=args.host,
        port=args.port,
        work_dir=args.work_dir,
        worker_timeout_ms=args.worker_timeout_ms,
        heartbeat_ms=args.heartbeat_ms,
    )


def main(args: argparse.Namespace) -> int:
    """``make data-service``: run the cluster in the foreground until Ctrl-C or SIGTERM."""
    stopping = threading.Event()
    # Ctrl-C and SIGTERM only set a flag: a KeyboardInterrupt raised at any point (inside Popen,
    # say) could leave a server started but not yet tracked. Start-up checks the flag between steps.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    cluster = LocalCluster(spec_of(args), stop=stopping)
    try:
        cluster.__enter__()
    except ClusterStopped:
        log.info("stopped while starting the tf.data service")
        return 0
    try:
        log.info("tf.data service ready: DATA_SERVICE=%s (Ctrl-C stops it)", cluster.spec.address)
        while not stopping.wait(1.0):
            dead = [p for p in [cluster.dispatcher, *cluster.workers] if p is not None and p.poll() is not None]
            if dead:
                log.error("a tf.data service process exited (code %s); stopping the rest", dead[0].returncode)
                return 1
        log.info("stopping the tf.data service")
    finally:
        cluster.stop()
    return 0


def serve(argv: list[str]) -> int:
    """One server in this process."""
    p = argparse.ArgumentParser(prog="python -m ingest.service")
    p.add_argument("role", choices=["dispatcher", "worker"])
    p.add_argument("--index", type=int, default=0)
    add_cluster_args(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    spec = spec_of(args)
    if args.role == "dispatcher":
        serve_dispatcher(spec)
    else:
        serve_worker(spec, args.index)
    return 0
