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
    # horovod, elastic: ranks may die and join a live run (horovodrun --min-np/--max-np with a host
    # discovery script); training continues from the last commit with the input position re-derived
    elastic: bool = False
    min_processes: int = 0  # elastic: fewest ranks the run goes on with (0: processes)
    max_processes: int = 0  # elastic: most ranks (0: processes)
    discovery: str = ""  # elastic: host discovery script ('': stoker's, localhost slots from runs/<run>/elastic/slots)
    commit_every: int = 5  # elastic: steps between commits (a rank's death redoes at most this many steps)

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
        if self.elastic or self.min_processes or self.max_processes or self.discovery:
            self._check_elastic()
        if self.name == "pipeline" and self.stages > self.devices:
            raise ValueError(f"strategy.stages={self.stages} needs as many devices; set DEVICES={self.stages}")

    @property
    def np_range(self) -> tuple[int, int]:
        """(fewest, most) ranks of an elastic run; (processes, processes) otherwise."""
        low, high = self.min_processes or self.processes, self.max_processes or self.processes
        return (low, high) if self.elastic else (self.processes, self.processes)

    def _check_elastic(self) -> None:
        if not self.elastic:
            given = [k for k in ("min_processes", "max_processes", "discovery") if getattr(self, k)]
            raise ValueError(
                f"strategy.{given[0]}={getattr(self, given[0])!r} (MIN_NP, MAX_NP, DISCOVERY) only applies to "
                "an elastic run: add ELASTIC=1 (with STRATEGY=horovod) or drop it"
            )
        if self.name != "horovod":
            raise ValueError(
                f"strategy.elastic=true (ELASTIC=1) needs STRATEGY=horovod, not {self.name!r}: the other "
                "backends resume on another worker count from a checkpoint instead (run the command again)"
            )
        low, high = self.np_range
        if low < 1 or low > self.processes:
            raise ValueError(
                f"strategy.min_processes={low} (MIN_NP) must be within 1..strategy.processes={self.processes} "
                f"(NP): the run starts with NP ranks and goes on while at least MIN_NP are alive"
            )
        if high < self.processes:
            raise ValueError(
                f"strategy.max_processes={high} (MAX_NP) must be >= strategy.processes={self.processes} (NP)"
            )
        if self.hosts:
            raise ValueError(
                f"strategy.hosts={self.hosts!r} (HOSTS) is for fixed hosts; an elastic run finds its hosts with "
                "DISCOVERY=/path/to/script (prints host:slots lines), or leave both empty for this machine"
            )
        if self.commit_every < 1:
            raise ValueError(f"strategy.commit_every={self.commit_every} must be >= 1 (steps between commits)")
