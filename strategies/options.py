"""The strategy section of a run config (a leaf: no TensorFlow, so the config root can import it)."""

from __future__ import annotations

import dataclasses

STRATEGIES = ("one_device", "mirrored", "multi_worker", "horovod", "pipeline", "tpu")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StrategyOptions:
    """How training is distributed."""

    name: str = "mirrored"  # one_device | mirrored | multi_worker | horovod | pipeline | tpu
    devices: int = 2  # devices per process: logical CPU devices here, real GPUs when present
    processes: int = 2  # worker processes launched locally (multi_worker, horovod)
    hosts: str = ""  # horovod: host1:4,host2:4 (empty: localhost:processes)
    port: int = 0  # first port of locally launched workers (0: pick free ports)
    stages: int = 2  # pipeline: consecutive model stages, one per device
    microbatches: int = 4  # pipeline: micro-batches per step
    remat: bool = False  # pipeline: recompute each stage's activations in the backward pass
    tpu: str = "local"  # TPU name or grpc:// address for TPUClusterResolver
    tpu_timeout_s: float = 30.0  # give up connecting to a TPU after this long
    collective_timeout_s: float = 120.0  # multi_worker/horovod: a peer silent this long is dead
    # multi_worker/horovod: after a SIGTERM the workers get this long to save at a step boundary and
    # exit, then the launcher kills the tree (a resume reads the last complete checkpoint); the
    # default keeps the run's end within 10 s of the signal
    preempt_grace_s: float = 7.0

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            import difflib

            close = difflib.get_close_matches(self.name, STRATEGIES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"unknown strategy {self.name!r}{hint}: choose one of {', '.join(STRATEGIES)}")
        if self.preempt_grace_s <= 0:
            raise ValueError(f"strategy.preempt_grace_s={self.preempt_grace_s} must be > 0 (seconds)")
        for key in ("devices", "processes", "stages", "microbatches"):
            if getattr(self, key) < 1:
                raise ValueError(f"strategy.{key}={getattr(self, key)} must be >= 1")
        if self.name == "pipeline" and self.stages > self.devices:
            raise ValueError(f"strategy.stages={self.stages} needs as many devices; set DEVICES={self.stages}")
