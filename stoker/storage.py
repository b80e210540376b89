"""Where files live: a local folder, or a URL (``s3://``, ``gs://``) read and written through ``tf.io.gfile``.

:func:`location` turns a configured path into a :class:`pathlib.Path` when it is local (so local
behaviour is exactly what it was) and into a :class:`Url` when it has a scheme. ``Url`` offers the
part of the ``Path`` interface stoker uses (``/``, ``name``, ``parent``, ``is_file``, ``read_text``,
``glob``, ...) on top of ``tf.io.gfile``, so code and plug-ins that do ``dataset.root / "x"`` work on
both. The helpers :func:`glob`, :func:`size` and :func:`open_file` take either kind of path string.

``s3://`` is tensorflow-io's S3 filesystem (registered when ``tensorflow_io`` is imported); the
endpoint comes from ``S3_ENDPOINT`` (tensorflow-io's variable) or ``AWS_ENDPOINT_URL``, credentials
from the AWS SDK's own chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
``~/.aws/credentials``, instance roles). Nothing here reads or logs a secret. ``gs://`` is
TensorFlow's GCS filesystem (``tensorflow-io-gcs-filesystem``), credentials from
``GOOGLE_APPLICATION_CREDENTIALS`` or the metadata server.

tensorflow-io's S3 filesystem leaves static AWS SDK objects that abort the process as it exits
("pure virtual method called", exit code 134: an EC2 metadata client destroyed after the HTTP
layer it uses; the SDK's shutdown call is not exported). :func:`exit_process` therefore ends a
process that used ``s3://`` with ``os._exit`` after flushing Python's streams and logs; processes
stoker's entry points do not end, Beam's worker processes writing shards, get the same at
interpreter exit (:func:`_end_without_teardown`), with the exit code Python would have used.
"""

from __future__ import annotations

import atexit
import glob as _glob
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from stoker.errors import StokerError

log = logging.getLogger(__name__)

_state = {"s3_used": False}
_checked: dict[str, str] = {}  # bucket URL -> '' when usable, else the problem
_lock = threading.Lock()
PROBE_TIMEOUT_S = 20.0  # tensorflow-io retries an unreachable endpoint for ~50 s before answering "no"


class StorageError(StokerError):
    """A bucket or endpoint cannot be used; the message names the path and what to do."""


def is_url(path: str | os.PathLike | Url) -> bool:
    """Whether ``path`` names object storage (or any gfile scheme) rather than a local file."""
    return "://" in str(path)


def location(path: str | os.PathLike | Url) -> Path | Url:
    """``Path`` for a local path (unchanged behaviour), :class:`Url` for ``scheme://...``."""
    if isinstance(path, Url):
        return path
    return Url(str(path)) if is_url(path) else Path(path)


def glob(pattern: str) -> list[str]:
    """Sorted matches of ``pattern`` (``glob.glob`` locally, ``tf.io.gfile.glob`` for a URL)."""
    if not is_url(pattern):
        return sorted(_glob.glob(pattern))
    return sorted(_gfile(pattern).glob(pattern))


def size(path: str | os.PathLike) -> int:
    """Bytes in file ``path``."""
    if not is_url(path):
        return os.path.getsize(path)
    return _gfile(str(path)).stat(str(path)).length


def open_file(path: str | os.PathLike, mode: str = "rb") -> IO[Any]:
    """``open`` locally, ``tf.io.gfile.GFile`` for a URL (modes r, rb, w, wb, a)."""
    if not is_url(path):
        return open(path, mode)  # noqa: SIM115  (the caller closes it)
    return _gfile(str(path)).GFile(str(path), mode)


def register(url: str) -> None:
    """Make ``url``'s filesystem known to TensorFlow ops that take a path (``Dataset.cache``,
    ``TFRecordDataset``) and check its bucket: for a path that stoker hands to TensorFlow unopened."""
    if is_url(url):
        _gfile(url)
        check_bucket(url)


def used_object_store() -> bool:
    """Whether this process has touched ``s3://`` (see :func:`exit_process`)."""
    return _state["s3_used"]


def exit_process(code: int, *, at_once: bool = False) -> None:
    """End the process with ``code``; after ``s3://`` was used, or ``at_once``, without teardown.

    Python's own end-of-run work is done first (logging flushed and closed, stdout and stderr
    flushed); then the AWS SDK's broken static teardown is skipped, and with ``at_once`` also the
    release of live objects (a caller that has written and closed its files wants no wait).
    """
    if not (at_once or used_object_store()):
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or redirected away
            pass
    os._exit(code)


def _gfile(url: str):
    """``tf.io.gfile`` with the filesystem for ``url``'s scheme registered."""
    import tensorflow as tf

    if url.startswith("s3://"):
        _endpoint_from_standard_variables()
        import tensorflow_io  # noqa: F401  (registers s3:// with tf.io.gfile)

        if not _state["s3_used"]:
            _state["s3_used"] = True
            if _main_module() == BEAM_WORKER:
                _end_without_teardown()
    return tf.io.gfile


BEAM_WORKER = "apache_beam.runners.worker.sdk_worker_main"  # DirectRunner multi_processing's worker


def _main_module() -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None else ""


def _end_without_teardown() -> None:
    """Beam's worker processes: at interpreter exit, ``os._exit`` with the code Python would use (0,
    ``sys.exit``'s, 1 after an uncaught exception), so the AWS SDK's static teardown never runs.

    Only there: the worker ends by returning or raising, which this sees; a ``raise SystemExit(n)``
    elsewhere would not be seen and would leave as 0. Registered when ``s3://`` is first used, so it
    runs before the exit handlers registered earlier (``logging``'s flush is done here)."""
    code = {"value": 0}
    hook, real_exit = sys.excepthook, sys.exit

    def on_uncaught(*exc: Any) -> None:
        code["value"] = 1
        hook(*exc)

    def on_exit(status: Any = None) -> None:
        code["value"] = status if isinstance(status, int) else (0 if status is None else 1)
        real_exit(status)

    sys.excepthook, sys.exit = on_uncaught, on_exit
    atexit.register(lambda: exit_process(code["value"]))


def _endpoint_from_standard_variables() -> None:
    """tensorflow-io reads ``S3_ENDPOINT``; take it from ``AWS_ENDPOINT_URL`` when only that is set.

    An ``http://`` endpoint (a local server) turns HTTPS and certificate checks off unless set.
    """
    endpoint = (
        os.environ.get("S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    if not endpoint:
        return
    os.environ.setdefault("S3_ENDPOINT", endpoint)
    if endpoint.startswith("http://"):
        os.environ.setdefault("S3_USE_HTTPS", "0")
        os.environ.setdefault("S3_VERIFY_SSL", "0")


def _credentials_visible() -> bool:
    """Whether a standard AWS credential source is visible (instance roles cannot be seen from here)."""
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return True
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    shared = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
    return os.path.isfile(shared)


def _endpoint_problem() -> str:
    """'' when the configured S3 endpoint accepts a TCP connection (or none is set), else why not."""
    endpoint = os.environ.get("S3_ENDPOINT", "")
    if not endpoint:
        return ""
    parts = urlsplit(endpoint if "://" in endpoint else "http://" + endpoint)
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        socket.create_connection((parts.hostname, port), timeout=5).close()
    except OSError as err:
        return f"the S3 endpoint {endpoint} (S3_ENDPOINT / AWS_ENDPOINT_URL) does not answer ({err.strerror or err})"
    return ""


def check_bucket(url: str) -> None:
    """Raise :class:`StorageError` naming ``url`` when its bucket cannot be reached; once per bucket.

    tensorflow-io answers "no such file" for a missing bucket, an unreachable endpoint and refused
    credentials alike (and a write into a missing bucket fails silently), so stoker asks first.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3":
        return
    bucket = f"s3://{parts.netloc}/"
    with _lock:
        if bucket not in _checked:
            _checked[bucket] = _bucket_problem(bucket)
    problem = _checked[bucket]
    if problem:
        raise StorageError(f"{url}: {problem}")


def _bucket_problem(bucket: str) -> str:
    gfile = _gfile(bucket)
    problem = _endpoint_problem()
    if problem:
        return problem + "; start the server or fix the variable"
    answer: list[bool] = []
    probe = threading.Thread(target=lambda: answer.append(gfile.isdir(bucket)), daemon=True)
    probe.start()
    probe.join(PROBE_TIMEOUT_S)
    if answer and answer[0]:
        return ""
    endpoint = os.environ.get("S3_ENDPOINT") or "AWS's default endpoint (no S3_ENDPOINT or AWS_ENDPOINT_URL set)"
    creds = (
        ""
        if _credentials_visible()
        else "; no AWS credentials are visible (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
        "~/.aws/credentials), so only an instance role could answer"
    )
    what = f"did not answer within {PROBE_TIMEOUT_S:.0f} s" if not answer else "is missing or not readable"
    return (
        f"bucket {bucket} {what} at {endpoint}{creds}; create the bucket (e.g. `aws s3 mb {bucket}`), "
        f"or set S3_ENDPOINT/AWS_ENDPOINT_URL and credentials for it"
    )


class Url:
    """A ``scheme://bucket/key`` path with the subset of ``pathlib.Path`` stoker uses, over ``tf.io.gfile``.

    Not an ``os.PathLike`` on purpose: ``open(url)`` must fail loudly rather than create a local
    folder named ``s3:``. Use :func:`open_file` (or :meth:`open`) to read and write.
    """

    __slots__ = ("_url",)

    def __init__(self, url: str) -> None:
        if "://" not in url:
            raise ValueError(f"{url!r} is not a URL (scheme://...)")
        scheme, rest = url.split("://", 1)
        self._url = f"{scheme}://{rest.rstrip('/')}" if rest.strip("/") else f"{scheme}://{rest}"
        check_bucket(self._url)

    def __str__(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"Url({self._url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Url) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)

    def __truediv__(self, part: str | os.PathLike) -> Url:
        return Url(f"{self._url}/{str(part).strip('/')}")

    @property
    def name(self) -> str:
        return self._url.rsplit("/", 1)[1]

    @property
    def parent(self) -> Url:
        return Url(self._url.rsplit("/", 1)[0])

    def with_name(self, name: str) -> Url:
        return self.parent / name

    @property
    def _fs(self):
        return _gfile(self._url)

    def exists(self) -> bool:
        return self._fs.exists(self._url)

    def is_dir(self) -> bool:
        return self._fs.isdir(self._url)

    def is_file(self) -> bool:
        return self._fs.exists(self._url) and not self._fs.isdir(self._url)

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """A folder marker (object stores have none; listing under the prefix works without it)."""
        self._fs.makedirs(self._url)

    def open(self, mode: str = "r") -> IO[Any]:
        return self._fs.GFile(self._url, mode)

    def read_bytes(self) -> bytes:
        with self.open("rb") as f:
            return f.read()

    def read_text(self, errors: str = "strict") -> str:
        return self.read_bytes().decode("utf-8", errors=errors)

    def write_bytes(self, data: bytes) -> None:
        with self.open("wb") as f:
            f.write(data)

    def write_text(self, data: str) -> None:
        self.write_bytes(data.encode("utf-8"))

    def glob(self, pattern: str) -> list[Url]:
        """Paths under this folder matching ``pattern`` (``*`` within one level, as ``Path.glob``), sorted."""
        return [Url(p) for p in sorted(self._fs.glob(f"{self._url}/{pattern.strip('/')}"))]

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self._fs.exists(self._url):
            return
        self._fs.remove(self._url)

    def rmtree(self) -> None:
        """Delete everything under this prefix (no error when there is nothing)."""
        if self._fs.isdir(self._url):
            self._fs.rmtree(self._url)
        elif self._fs.exists(self._url):
            self._fs.remove(self._url)

    def size(self) -> int:
        return self._fs.stat(self._url).length

    def version(self) -> tuple[int, int] | None:
        """(bytes, modification time in ns) of this object, None when there is none (one request)."""
        import tensorflow as tf

        try:
            stat = self._fs.stat(self._url)
        except tf.errors.NotFoundError:
            return None
        return None if stat.is_directory else (stat.length, stat.mtime_nsec)
