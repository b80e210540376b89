"""Sizes of one benchmark run: the full run (``make bench``) and the smoke run (``QUICK=1``).

Every suite reads the same frozen :class:`BenchConfig`, so a figure in one suite's JSON can be
compared with another's (same images, same batch, same crop).
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What the suites measure and how long; ``full()`` and ``quick()`` are the two presets."""

    quick: bool = False
    data_dir: str = "data/bench"  # benchmark data lives here (gitignored), made once and reused
    dataset: str = ""  # a registered dataset to benchmark instead of the built-ins ('' = shapes + clicks)
    reps: int = 5  # timed windows per figure (median, min, max)
    warmup: int = 1  # untimed windows before timing (0 in smoke runs: they check code paths, not rates)
    image_size: int = 256  # side of the stored JPEGs
    crop: int = 224  # side after random-resized crop
    batch: int = 64  # examples per batch everywhere
    image_examples: int = 8000  # train examples of shapes (naive epoch >= 10 s here)
    image_shards: int = 16  # TFRecord shards of shapes
    window_batches: int = 20  # batches per timed window in the image suites
    shuffle_buffer: int = 1024  # examples in every shuffle buffer (stoker and the loaders alike)
    clicks_rows: int = 200_000  # train rows of clicks
    clicks_window_batches: int = 300  # batches per timed window on clicks
    ceiling_images: int = 1024  # in-memory JPEGs decoded per timed window of the decode ceiling
    cores: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self) -> None:
        for key in ("reps", "batch", "image_examples", "image_shards", "window_batches", "clicks_rows", "cores"):
            if getattr(self, key) < 1:
                raise ValueError(f"bench {key}={getattr(self, key)} must be >= 1")
        if self.crop > self.image_size:
            raise ValueError(f"bench crop={self.crop} is larger than image_size={self.image_size}")

    @classmethod
    def full(cls, **overrides: object) -> BenchConfig:
        """The sizes of ``make bench`` (about 15 minutes on 2 cores)."""
        return cls(**overrides)

    @classmethod
    def smoke(cls, **overrides: object) -> BenchConfig:
        """Tiny sizes for ``QUICK=1`` and the tests: every code path, seconds per suite."""
        small = dict(
            quick=True,
            data_dir="data/bench-quick",
            reps=2,
            warmup=0,
            image_examples=256,
            image_shards=4,
            window_batches=3,
            batch=16,
            shuffle_buffer=64,
            clicks_rows=4000,
            clicks_window_batches=10,
            ceiling_images=32,
        )
        return cls(**{**small, **overrides})

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)
