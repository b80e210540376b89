"""Checkpoint policy: where each worker keeps its checkpoints, and which step a run resumes from.

The input is saved as a position (:class:`InputState`): every worker restores the chief's newest
checkpoint (:func:`restore_shared`), on any worker count. With ``pipeline.iterator_checkpoint``
each worker's checkpoint holds its own iterator; a kill can land between two workers' saves, so
a resumed run restores the newest step all of them have (:func:`restore`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from ingest.built import Position
from ingest.order import Order
from ingest.runconfig import RunConfig
from stoker.errors import StokerError
from strategies.backend import Backend

log = logging.getLogger("stoker")


def checkpoint_dir(config: RunConfig, backend: Backend) -> Path:
    base = chief_dir(config)
    return base if backend.is_chief else base / f"worker_{backend.topology.worker_index}"


def chief_dir(config: RunConfig) -> Path:
    """The chief's checkpoint folder: what every worker restores from when the input is a position."""
    return config.run_dir / "checkpoints"


def _step(path: str) -> int:
    """The step a checkpoint path (``.../ckpt-<step>``) was saved at."""
    return int(path.rsplit("-", 1)[1])


def checkpoint_steps(manager: tf.train.CheckpointManager) -> list[int]:
    """Steps of the checkpoints ``manager`` keeps, oldest first."""
    return [_step(path) for path in manager.checkpoints]


def common_step(table: np.ndarray) -> int | None:
    """The newest step every worker has a checkpoint of (rows: workers; -1 pads), None if none has any.

    A kill can land between two workers' saves of the same step, leaving one a checkpoint
    ahead: every worker then restores the newest step they all have, so they stay in step.
    """
    rows = [set(int(v) for v in row) - {-1} for row in table]
    if not any(rows):
        return None
    common = set.intersection(*rows)
    if not common:
        raise StokerError(
            f"the workers' checkpoints have no step in common (steps per worker: "
            f"{[sorted(r) for r in rows]}); delete the run's checkpoints folder (every "
            f"worker's) to start again, or raise train.keep_checkpoints"
        )
    return max(common)


def restore(ckpt: tf.train.Checkpoint, manager: tf.train.CheckpointManager, backend: Backend, keep: int) -> None:
    """Host, every worker (a collective when there are several): restore the newest common checkpoint."""
    steps = checkpoint_steps(manager)[-keep:]
    if backend.topology.workers > 1:
        padded = np.full(keep, -1, np.int64)
        padded[: len(steps)] = steps
        step = common_step(backend.gather_ints(padded))
    else:
        step = steps[-1] if steps else None
    if step is None:
        return
    path = next(p for p in manager.checkpoints if p.endswith(f"-{step}"))
    ckpt.restore(path).assert_existing_objects_matched()
    log.info("resumed from %s at step %d", path, int(ckpt.step))


class InputState:
    """The input part of a checkpoint: the position (epoch, consumed, seed) and what it counts.

    Two small variables (three int64 and a short JSON string) replace TensorFlow's iterator
    state, whose size grows with the shuffle and prefetch buffers. With the tf.data service
    (``ledger=True``) a third holds which examples of the epoch were consumed
    (:class:`ingest.ledger.Ledger`: a compressed bitmap, at most N/8 bytes per open epoch).
    """

    def __init__(self, order: Order, dataset: str, *, ledger: bool = False) -> None:
        self.order, self.dataset = order, dataset
        ident = {"dataset": dataset, **order.identity()} | ({"input": "tf.data service ledger"} if ledger else {})
        self._identity = json.dumps(ident, sort_keys=True)
        self.position = tf.Variable([0, 0, order.seed], dtype=tf.int64, trainable=False, name="input_position")
        self.identity = tf.Variable(self._identity, dtype=tf.string, trainable=False, name="input_identity")
        self.ledger = tf.Variable(b"", dtype=tf.string, trainable=False, name="input_ledger") if ledger else None

    def trackables(self) -> dict[str, tf.Variable]:
        out = {"input_position": self.position, "input_identity": self.identity}
        return out | ({"input_ledger": self.ledger} if self.ledger is not None else {})

    def set(self, examples: int, ledger: bytes = b"") -> None:
        """Host: record that ``examples`` examples were taken since the start (all workers, all epochs),
        and with the service which ones this epoch (``ledger``, ``Built.ledger()``)."""
        p = Position.at(examples, self.order.num_examples, self.order.seed)
        self.position.assign([p.epoch, p.consumed, p.seed])
        if self.ledger is not None:
            self.ledger.assign(ledger)

    def check_saved(self, path: str) -> None:
        """Host, before a restore: refuse checkpoint ``path`` when its input belongs to other data, another
        order, or was read with(out) the tf.data service (whose ledger the other kind lacks), naming what differs."""
        reader = tf.train.load_checkpoint(path)
        key = "input_identity/.ATTRIBUTES/VARIABLE_VALUE"
        if reader.has_tensor(key):
            self._compare(reader.get_tensor(key).decode())

    def restored(self) -> Position:
        """Host, after a restore: the saved position, checked against this run's data and order."""
        self._compare(self.identity.numpy().decode())
        epoch, consumed, seed = (int(v) for v in self.position.numpy())
        return Position(epoch, consumed, seed, ledger=self.ledger.numpy() if self.ledger is not None else b"")

    def _compare(self, identity: str) -> None:
        saved = json.loads(identity)
        mine = json.loads(self._identity)
        differs = [
            f"{k}: checkpoint {saved.get(k)!r}, this run {mine.get(k)!r}"
            for k in sorted(set(mine) | set(saved))
            if saved.get(k) != mine.get(k)
        ]
        if differs:
            raise StokerError(
                "the checkpoint's input position belongs to other data or another order ("
                + "; ".join(differs)
                + "): resume with the same dataset, split size, data.seed, pipeline.shuffle and DATA_SERVICE= "
                "(set or not), or start a new RUN="
            )

    def nbytes(self) -> int:
        """Bytes of input state in a checkpoint (the variables' values)."""
        ledger = len(self.ledger.numpy()) if self.ledger is not None else 0
        return 3 * 8 + len(self._identity.encode()) + ledger


def restore_shared(
    ckpt: tf.train.Checkpoint, chief: Path, backend: Backend, check: Callable[[str], None] | None = None
) -> int | None:
    """Host, every worker: restore the chief's newest checkpoint (a collective when there are several).

    With the input saved as a position, every checkpoint of the chief holds all a worker needs,
    whatever the worker count of the run that wrote it; workers' own folders are not read.
    ``check(path)`` runs first (:meth:`InputState.check_saved`).
    """
    state = tf.train.get_checkpoint_state(str(chief))
    paths = list(state.all_model_checkpoint_paths) if state else []
    steps = sorted(_step(p) for p in paths)
    newest = steps[-1] if steps else -1
    # An elastic run restores without a collective (a joining rank runs this alone); each rank then
    # takes rank 0's variables when the elastic loop starts.
    if backend.topology.workers > 1 and not backend.elastic:
        newest = int(backend.gather_ints(np.array([newest], np.int64))[0, 0])  # the chief's answer for all
    if newest < 0:
        return None
    path = str(chief / f"ckpt-{newest}")
    if check is not None:
        check(path)
    ckpt.restore(path).assert_existing_objects_matched()
    log.info("resumed from %s at step %d", path, int(ckpt.step))
    return newest
