"""Shared command-line plumbing for the packages' ``__main__`` modules."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path


def verbose() -> bool:
    """``VERBOSE=1``: show what libraries print (TensorFlow's C++ log, Beam's workers and INFO lines)."""
    return os.environ.get("VERBOSE", "") not in ("", "0")


# The checkout holds ingest, strategies, training, profiles and benchmarks (only `stoker` is
# installed): processes started from here (launched workers, Beam's workers) import them too.
REPO = str(Path(__file__).resolve().parent.parent)
if REPO not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)

# TensorFlow's C++ log: level 3 hides the CUDA "Unable to register cuDNN/cuBLAS/cuFFT factory"
# errors every CPU-only import prints; errors that matter still reach Python as exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if verbose() else "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# Lines libraries print on every run that say nothing about it (unless VERBOSE=1).
_NOISE = ("apitools not found",)  # Beam's GCP extras probing for a client stoker does not use


# Lines a worker process prints that say nothing about the run (unless VERBOSE=1): absl's notice
# before its log is initialised, absl INFO lines (gRPC and the coordination service connecting),
# the coordination service noticing, as the run ends, that a peer has already exited (a worker
# that dies mid-run is reported by the launcher itself, with its exit code), and the tf.data
# service client's retries against a dispatcher that has already stopped.
_ABSL = r"[IWE]\d{4} [\d:.]+ +\d+ "
_WORKER_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|I\d{4} [\d:.]+ +\d+ "
    rf"|{_ABSL}coordination_service_agent\.cc:\d+\] Coordination agent is set to ERROR: UNAVAILABLE"
    rf"|{_ABSL}data_service_client\.cc:\d+\] Failed to (heartbeat|release))"
)


def is_noise(line: str) -> bool:
    """Whether a child process's output line is library noise to hide (never with ``VERBOSE=1``)."""
    return not verbose() and bool(_WORKER_NOISE.match(line))


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_NOISE)


def setup_logging(level: int = logging.INFO) -> None:
    """Progress lines to stdout; the chatty libraries (TF, absl, Beam) to warnings only, Beam to
    errors (its local job service relays every worker's warnings), all of them with ``VERBOSE=1``."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    if verbose():
        return
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropNoise())
    for name in ("absl", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # TensorFlow's Python warnings here are its own internals (a collective's gather "retracing"
    # on every call); Beam's local job service relays every worker's warnings.
    for name in ("tensorflow", "apache_beam"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet_library_warnings()


def quiet_library_warnings() -> None:
    """Drop the import-time FutureWarnings of google-api-core and google-auth (Beam's GCP extra, which
    TFDV needs, imports them): Python 3.11's end of life and grpcio's post-quantum support are not
    this run's. Call before importing the libraries (``VERBOSE=1`` keeps them)."""
    if not verbose():
        warnings.filterwarnings("ignore", r"(You are using a Python version|grpcio < )", FutureWarning)


@contextlib.contextmanager
def stderr_to(path: str | os.PathLike) -> Iterator[None]:
    """Send file descriptor 2 (this process and the children it starts) to ``path`` (appended)
    unless ``VERBOSE=1``. For jobs whose workers print their own logs (Beam's DirectRunner)."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as f:
            os.dup2(f.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser taking KEY=value items and repeated --set "a.b=1 c.d=2"."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("items", nargs="*", metavar="KEY=value", help="make variables (EPOCHS=3) or dotted keys")
    p.add_argument("--set", action="append", default=[], help='dotted overrides, e.g. "pipeline.cache=false"')
    return p


def main_guard(fn: Callable[[], int]) -> None:
    """Run ``fn``; a stoker or config error prints one clear line and exits 2 (no traceback).

    The process ends through :func:`stoker.storage.exit_process`, so a run that used ``s3://``
    exits with its own code rather than the AWS SDK's abort at teardown."""
    import traceback

    from stoker import storage
    from stoker.config import ConfigError
    from stoker.errors import StokerError
    from stoker.registry import RegistryError

    try:
        code = fn()
    except (ConfigError, StokerError, RegistryError) as err:
        logging.getLogger("stoker").error("%s", err)
        code = 2
    except BaseException as err:  # only to keep the exit code once s3:// was used; re-raised otherwise
        if not storage.used_object_store():
            raise
        if isinstance(err, SystemExit):
            code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        else:
            traceback.print_exc()
            code = 130 if isinstance(err, KeyboardInterrupt) else 1
    storage.exit_process(code)
