"""A TensorFlow profiler trace of a few real steps, and TensorBoard's own reading of it.

``capture`` runs on the host: ``tf.profiler.experimental.start`` into ``runs/<RUN>/profile``,
one ``Trace("train", step_num=..., _r=1)`` per step (the annotation TensorBoard's step
breakdown keys on), then ``stop``. The trace lands in
``<logdir>/plugins/profile/<timestamp>/<host>.xplane.pb``, which ``make tensorboard RUN=...``
opens. ``tensorboard_verdict`` reads it through ``tensorboard_plugin_profile`` without a
browser, so stoker's figures can be held against TensorBoard's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import tensorflow as tf

log = logging.getLogger(__name__)
MAX_STEPS = 10  # a longer trace is large and slow to open, and adds nothing to the breakdown


class TraceError(RuntimeError):
    """No readable trace: the profiler wrote nothing, or TensorBoard's plugin could not read it."""


def capture(step: Callable[[Any], Any], iterator: Iterator[Any], *, steps: int, logdir: Path) -> Path:
    """Trace ``steps`` (1..10) real steps, each fetching its batch inside its annotation.

    Returns the ``.xplane.pb`` written. Only one profiler session may run per process.
    """
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"trace steps={steps} must be within 1..{MAX_STEPS} (profile.trace_steps)")
    logdir.mkdir(parents=True, exist_ok=True)
    before = set(logdir.glob("plugins/profile/*/*.xplane.pb"))
    tf.profiler.experimental.start(str(logdir))
    try:
        for n in range(steps):
            with tf.profiler.experimental.Trace("train", step_num=n, _r=1):
                step(next(iterator))
    finally:
        tf.profiler.experimental.stop()
    new = sorted(set(logdir.glob("plugins/profile/*/*.xplane.pb")) - before)
    if not new:
        raise TraceError(f"the TensorFlow profiler wrote no .xplane.pb under {logdir}/plugins/profile")
    return new[-1]


@dataclasses.dataclass(frozen=True)
class TensorBoardVerdict:
    """What TensorBoard's input pipeline analyzer says about a trace."""

    steps: int  # annotated steps it found
    input_percent: float  # its share of step time waiting for input
    step_ms_average: float
    conclusion: str  # its sentence, e.g. "Your program is NOT input-bound because ..."

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tensorboard_verdict(xplane: Path) -> TensorBoardVerdict:
    """TensorBoard's input pipeline analysis of one ``.xplane.pb`` (no browser, no server)."""
    from tensorboard_plugin_profile.convert import raw_to_tool_data

    data, _ = raw_to_tool_data.xspace_to_tool_data([str(xplane)], "input_pipeline_analyzer^", {})
    if not data:
        raise TraceError(f"TensorBoard's profile plugin could not read {xplane}")
    tables = json.loads(data)
    summary = tables[0]
    props = summary.get("p", {})
    rows = summary.get("rows", [])
    cols = [c["id"] for c in summary.get("cols", [])]
    step_ms = [r["c"][cols.index("stepTimeMs")]["v"] for r in rows]
    input_ms = [r["c"][cols.index("infeedTimeMs")]["v"] for r in rows]
    percent = 100.0 * sum(input_ms) / sum(step_ms) if sum(step_ms) else 0.0
    return TensorBoardVerdict(
        len(rows), percent, float(props.get("steptime_ms_average", "nan")), props.get("input_conclusion", "")
    )


def write_summaries(logdir: Path, report_md: str, scalars: dict[str, float]) -> None:
    """An events file beside the trace: the report as text and its main figures as scalars.

    TensorBoard's profile plugin lists a trace only where ``plugins/profile`` sits at the logdir
    root or in a folder that holds an events file, so without this the Profile tab of
    ``make tensorboard RUN=<run>`` stays empty for a ``make profile`` run.
    """
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        tf.summary.text("profile/report", report_md, step=0)
        for name, value in scalars.items():
            tf.summary.scalar(f"profile/{name}", value, step=0)
    writer.close()
