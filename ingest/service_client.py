"""The tf.data service client: a pipeline sent to the service, bounded by a timeout.

:func:`distribute` runs when the pipeline is built (host); its elements are produced on the
service's workers. :func:`close_sessions` ends this process's jobs (``LocalCluster.stop``
calls it before stopping the servers).
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator

import tensorflow as tf

from ingest.options import PipelineOptions
from stoker.errors import StokerError

MODES = {"dynamic": "distributed_epoch", "off": "parallel_epochs"}


class ServiceTimeoutError(StokerError, TimeoutError):
    """The tf.data service produced no element within ``pipeline.service_timeout_s``."""


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
    """Elements of ``ds``; raises :class:`ServiceTimeoutError` when one takes over ``timeout_s``."""
    return Pull(ds, threads).elements(timeout_s=timeout_s, where=where)


class Pull:
    """A daemon thread pulling ``ds`` (a service job) into a one-element queue, from the moment it is made.

    The pull cannot be interrupted inside the service; the consumer waits on the queue with a
    timeout instead. A timed-out pull thread stays blocked until the process exits. Made before
    it is read, a job starts while the one before it is still being read (``ingest.service_once``).
    """

    def __init__(self, ds: tf.data.Dataset, threads: list[threading.Thread] | None = None) -> None:
        self.box: queue.Queue = queue.Queue(maxsize=1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._pull, args=(ds,), name="tf.data-service-pull", daemon=True)
        if threads is not None:
            threads.append(self.thread)
        self.thread.start()

    def _offer(self, item: object) -> bool:
        """Hand ``item`` to the consumer; False once it stopped reading (the queue may stay full)."""
        while not self.stop.is_set():
            try:
                self.box.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _pull(self, ds: tf.data.Dataset) -> None:
        try:
            for element in ds:
                if not self._offer(element):
                    return  # drops the service iterator, which ends its client
            self._offer(_END)
        except Exception as err:  # noqa: BLE001 - handed to the consumer thread, re-raised there
            self._offer(err)

    def close(self) -> None:
        """Stop pulling: the thread returns at its next element (or the job's end)."""
        self.stop.set()

    def elements(self, *, timeout_s: float, where: str) -> Iterator:
        """The job's elements; raises :class:`ServiceTimeoutError` when one takes over ``timeout_s``."""
        try:
            while True:
                try:
                    item = self.box.get(timeout=timeout_s)
                except queue.Empty:
                    raise ServiceTimeoutError(
                        f"tf.data service at {where} gave no element for {timeout_s:g} s "
                        "(pipeline.service_timeout_s): are its workers up? Start them with `make data-service`, "
                        "or raise pipeline.service_timeout_s when the first element is slow"
                    ) from None
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.close()
