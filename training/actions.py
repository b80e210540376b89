"""The training loop's small actions, each called at a step boundary (as Orbit's actions are).

``IdRecorder`` appends each step's example ids (tests count them), ``Summaries`` writes the
TensorBoard scalars and images (chief only), ``Preemption`` turns SIGTERM into an agreed stop step.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import tensorflow as tf

from stoker import storage
from strategies.backend import Backend


class IdRecorder:
    """``runs/<run>/ids/worker_<i>.txt``: one line per step, the step then its example ids."""

    def __init__(self, run_dir: Path | storage.Url, worker_index: int, enabled: bool, *, hold: bool = False) -> None:
        self._file = None
        self.run_dir, self.worker_index = run_dir, worker_index
        # hold: lines wait for commit() (an elastic run's steps after its last commit may be redone)
        self.hold, self._held = hold, []
        if enabled:
            self._open()

    def _open(self) -> None:
        ids_dir = self.run_dir / "ids"
        ids_dir.mkdir(parents=True, exist_ok=True)
        # On object storage each flush uploads the whole object again (a test aid, not for long runs).
        self._file = storage.open_file(str(ids_dir / f"worker_{self.worker_index}.txt"), "a")

    def reopen(self, worker_index: int) -> None:
        """Host: write as worker ``worker_index`` from now on (an elastic rank renumbered); held lines dropped."""
        self._held = []
        if self._file is not None and worker_index != self.worker_index:
            self._file.close()
            self.worker_index = worker_index
            self._open()

    def commit(self) -> None:
        """Host: write the held lines (their steps are committed and will not be redone)."""
        if self._file is not None and self._held:
            self._file.write("".join(self._held))
            self._file.flush()
        self._held = []

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def record(self, step: int, batch: dict[str, tf.Tensor]) -> None:
        if self._file is not None and "id" in batch:
            self.record_ids(step, batch["id"].numpy())

    def record_ids(self, step: int, ids) -> None:
        """One line: ``step`` then this worker's example ids of that step."""
        if self._file is None:
            return
        line = f"{step} {' '.join(map(str, ids.tolist()))}\n"
        if self.hold:
            self._held.append(line)
            return
        self._file.write(line)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class Summaries:
    """TensorBoard scalars and images under ``runs/<run>/tensorboard`` (chief only; others write nothing)."""

    def __init__(self, run_dir: Path | storage.Url, chief: bool) -> None:
        self._writer = tf.summary.create_file_writer(str(run_dir / "tensorboard")) if chief else None

    @property
    def active(self) -> bool:
        """True when this process writes the summaries (the chief)."""
        return self._writer is not None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is None:
            return
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def image(self, step: int, name: str, png: bytes) -> None:
        """One image from PNG bytes, decoded to the [1, H, W, C] uint8 tensor ``tf.summary.image`` takes."""
        if self._writer is None:
            return
        with self._writer.as_default(step=step):
            tf.summary.image(name, tf.io.decode_png(png)[tf.newaxis])

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()


class Preemption:
    """SIGTERM sets a flag; at each step boundary every worker learns whether any worker got one."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.flag = False
        try:
            signal.signal(signal.SIGTERM, self._set)
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            pass

    def _set(self, *_: Any) -> None:
        self.flag = True

    def requested(self) -> bool:
        """Host: a collective when there are several workers, so all stop at the same step."""
        if self.backend.topology.workers == 1:
            return self.flag
        return bool(self.backend.gather_ints([int(self.flag)]).max())
