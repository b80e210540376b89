"""The targets, written down before the run that measures them, each with where it came from.

A target compares two rows of one suite (``numerator / denominator``, or a row against a
bound). It is reported, never asserted: tests check correctness, not timings. Changing a
target is a commit of its own, before a run; a run never moves the goal it is judged by.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Goal:
    """``numerator / denominator >= wanted`` in ``suite``; rows named as in the suite's JSON."""

    suite: str
    name: str
    numerator: str
    denominator: str
    wanted: float
    source: str  # the issue (and date) that set it
    denominator_key: str = "median"  # the denominator row's figure (the decode bound row keeps its best window)


GOALS: tuple[Goal, ...] = (
    Goal(
        "ablation",
        "image: optimized / decode bound",
        "optimized",
        "decode bound",
        0.8,
        "issue 6 (2026-11, against the one-thread reference; the bound replaces it, issue 19)",
        denominator_key="bound",
    ),
    Goal(
        "ablation",
        "clicks: batched / per-example parse, naive pipeline",
        "batched parse (naive + vectorize)",
        "per-example parse (naive)",
        5.0,
        "issue 6 (2026-11)",
    ),
    Goal(
        "ablation",
        "clicks: batched / per-example parse, parse stage alone",
        "parse stage alone, batches of 256",
        "parse stage alone, per example",
        5.0,
        "issue 6 (2026-11)",
    ),
    Goal("loaders", "stoker / PyTorch DataLoader", "stoker optimized", "PyTorch DataLoader", 1.3, "issue 6 (2026-11)"),
    Goal("loaders", "stoker / DALI CPU", "stoker optimized", "DALI CPU", 1.0, "issue 6 (2026-11)"),
    Goal(
        "loaders",
        "stoker / plain tf.data, as users write it",
        "stoker optimized",
        "plain tf.data",
        1.2,
        "issue 6 (2026-11)",
    ),
    Goal(
        "loaders",
        "stoker / plain tf.data with stoker's per-image function (the pipeline machinery alone)",
        "stoker optimized",
        "plain tf.data, stoker's per-image function",
        1.1,
        "issue 19 (2026-12-02, before its run)",
    ),
    Goal(
        "table",
        "DATASET=table / clicks, optimized batched parse (as fast as clicks; 10% for its wider feature vector)",
        "table, optimized, batched parse (no cache)",
        "clicks, optimized, batched parse (no cache)",
        0.9,
        "issue 12 (2026-12-03, before its run)",
    ),
)


def of(suite: str) -> tuple[Goal, ...]:
    """The goals of one suite, in the order above."""
    return tuple(g for g in GOALS if g.suite == suite)
