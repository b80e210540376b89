"""The measurements value: everything ``diagnose`` reads, as plain frozen dataclasses.

Made on the host by ``profiles.harness`` (or by hand in tests); turned into JSON for
``report.json`` and back. No TensorFlow here, so the diagnosis stays a pure function.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageRate:
    """Throughput of the pipeline cut after one stage (a prefix), in examples per second."""

    name: str  # the stage this prefix adds: read, parse, cache, shuffle, augment, preprocess, batch, prefetch
    examples_per_s: float  # median over timed windows
    first_s: float = 0.0  # time to the first element of this prefix

    def __post_init__(self) -> None:
        if self.examples_per_s <= 0:
            raise ValueError(f"stage {self.name!r}: examples_per_s={self.examples_per_s} must be > 0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setup:
    """The facts about the pipeline and host that advice depends on (from the config and dataset)."""

    dataset: str = "shapes"
    preset: str = "optimized"  # pipeline.preset
    batch_size: int = 64  # global batch (train.batch_size)
    files: int = 8  # files of the split (0: made in memory)
    interleave: bool = True  # pipeline.interleave
    cycle_length: int = 4  # pipeline.cycle_length
    read_parallelism: int = -1  # pipeline.read_parallelism (-1 AUTOTUNE)
    map_parallelism: int = -1  # pipeline.map_parallelism (-1 AUTOTUNE)
    vectorize: bool = True  # pipeline.vectorize
    cache: bool = True  # parsed examples are cached (switched on and within the budget)
    prefetch: bool = True  # pipeline.prefetch
    data_service: str = ""  # pipeline.data_service
    split_examples: int | None = None  # examples in the split (None: unknown)
    shuffle_buffer: int = 0  # data.shuffle_buffer
    parsed_split_mb: float | None = None  # examples x bytes per parsed example (None: size unknown)
    available_ram_mb: float = 0.0  # host RAM available when measured
    cache_budget_mb: float = 8192  # pipeline.cache_budget_mb
    decodes_images: bool = False  # parse decodes images (JPEG/PNG): a decode-bound pipeline can move to DALI
    has_augment: bool = False  # the dataset augments training examples
    cpu_count: int = 1  # cores of this host
    cache_path: str = ""  # pipeline.cache_path ('' caches in memory)
    steps_per_loop: int = 1  # train.steps_per_loop
    run_examples: int = 0  # examples the run reads (epochs x split, or steps x batch; 0: unknown)

    @property
    def parallel_reads(self) -> int:
        """Files the pipeline reads at once."""
        if not self.interleave:
            return 1
        return self.cycle_length if self.read_parallelism == -1 else max(self.read_parallelism, 1)

    def cache_fits(self) -> bool:
        """True when the parsed split is known and fits both the cache budget and half the free RAM."""
        if self.parsed_split_mb is None:
            return False
        return self.parsed_split_mb <= min(self.cache_budget_mb, self.available_ram_mb / 2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Measurements:
    """The three scenarios and the prefix timings, on one pipeline and one model.

    Times are seconds per step of the global batch; rates are examples per second.
    """

    setup: Setup
    input_examples_per_s: float  # input-only: the whole pipeline iterated alone
    input_first_batch_s: float  # input-only: time to the first batch (startup, kept apart)
    input_build_s: float = 0.0  # building the pipeline on the host (an in-memory table is filled then)
    compute_step_s: float  # compute-only: one cached batch repeated through the train step
    wait_s: float  # end-to-end: wait for the next batch per step (median over windows of the window mean)
    compute_s: float  # end-to-end: train step after the batch arrived (median over windows of the window mean)
    loop_step_s: float = 0.0  # compute-only in compiled loops of ``loop_steps`` steps (0: not measured)
    loop_steps: int = 0  # steps per compiled call of ``loop_step_s``
    handoff_s: float = 0.0  # the wait inside those loops for a batch already there (the iterator's hand-off)
    step_waits: tuple[float, ...] = ()  # end-to-end, per timed step
    step_computes: tuple[float, ...] = ()
    stages: tuple[StageRate, ...] = ()  # prefixes in pipeline order

    def __post_init__(self) -> None:
        for key in ("input_examples_per_s", "compute_step_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"measurements.{key}={getattr(self, key)} must be > 0")
        if self.wait_s < 0 or self.compute_s <= 0:
            raise ValueError(f"measurements: wait_s={self.wait_s} must be >= 0 and compute_s={self.compute_s} > 0")
        if self.loop_step_s < 0 or (self.loop_step_s > 0) != (self.loop_steps > 0):
            raise ValueError(
                f"measurements: loop_step_s={self.loop_step_s} and loop_steps={self.loop_steps} "
                "go together (both 0: not measured)"
            )
        if len(self.step_waits) != len(self.step_computes):
            raise ValueError("measurements.step_waits and step_computes must have one value per step each")

    @property
    def step_s(self) -> float:
        """End-to-end seconds per step: wait plus compute."""
        return self.wait_s + self.compute_s

    @property
    def compute_examples_per_s(self) -> float:
        """Examples per second the train step alone consumes (compute-only)."""
        return self.setup.batch_size / self.compute_step_s

    @property
    def host_step_s(self) -> float:
        """Seconds of each end-to-end step outside a compiled loop's step over a cached batch: the wait
        for input plus the host's work to take a batch and dispatch one step from Python (what
        ``train.steps_per_loop`` pays once per loop); 0 when no loop was timed."""
        return max(0.0, self.step_s - self.loop_step_s) if self.loop_step_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurements:
        """The inverse of :meth:`as_dict` (e.g. from ``report.json``)."""
        d = dict(d)
        d["setup"] = Setup(**d["setup"])
        d["stages"] = tuple(StageRate(**s) for s in d.get("stages", ()))
        d["step_waits"] = tuple(d.get("step_waits", ()))
        d["step_computes"] = tuple(d.get("step_computes", ()))
        return cls(**d)
