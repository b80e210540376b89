"""Checkpoint policy: where each worker keeps its checkpoints, and which step a run resumes from.

Every worker saves the same steps; a kill can land between two workers' saves, so a resumed
run restores the newest step all of them have (a collective when there are several workers).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from ingest.runconfig import RunConfig
from stoker.errors import StokerError
from strategies.backend import Backend

log = logging.getLogger("stoker")


def checkpoint_dir(config: RunConfig, backend: Backend) -> Path:
    base = config.run_dir / "checkpoints"
    return base if backend.is_chief else base / f"worker_{backend.topology.worker_index}"


def checkpoint_steps(manager: tf.train.CheckpointManager) -> list[int]:
    """Steps of the checkpoints ``manager`` keeps, oldest first."""
    return [int(path.rsplit("-", 1)[1]) for path in manager.checkpoints]


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
