"""Topology: how many workers and replicas a run has, and which one this process is.

A frozen value made by the backend once the strategy exists; sharding arithmetic is pure
functions of it, tested without processes.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class Topology:
    """Workers (processes) and replicas (devices) of a run.

    Attributes:
        workers: processes that each run an input pipeline.
        worker_index: this process's index (0 is the chief).
        replicas: replicas in sync over all workers.
        local_replicas: replicas driven by this process.
    """

    workers: int = 1
    worker_index: int = 0
    replicas: int = 1
    local_replicas: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.worker_index < self.workers:
            raise ValueError(f"worker_index {self.worker_index} outside 0..{self.workers - 1}")
        if self.replicas != self.workers * self.local_replicas:
            raise ValueError(
                f"{self.replicas} replicas != {self.workers} workers x {self.local_replicas} local replicas"
            )

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    @property
    def first_local_replica(self) -> int:
        return self.worker_index * self.local_replicas

    def local_batch(self, global_batch: int) -> int:
        """Examples per step read by this worker's input pipeline."""
        if global_batch % self.replicas:
            raise ValueError(
                f"global batch {global_batch} does not split evenly over {self.replicas} replicas; "
                f"use a multiple of {self.replicas} (BATCH=)"
            )
        return global_batch // self.workers


def split_bounds(n: int, parts: int, index: int) -> tuple[int, int]:
    """[start, end) of part ``index`` when ``n`` items are split into ``parts`` near-equal parts."""
    return index * n // parts, (index + 1) * n // parts
