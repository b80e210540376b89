"""``runs/<RUN>/profile/``: report.json, report.md and chart.png from one profile.

Host only, after measuring. The JSON holds the resolved config, the raw measurements, the
diagnosis and TensorBoard's own verdict of the trace; the Markdown says the same for people;
the chart shows each prefix's throughput against what the model consumes, and each step's
time split into input wait and compute.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

from profiles.diagnose import STARTUP, Diagnosis
from profiles.measurements import Measurements
from profiles.trace import TensorBoardVerdict
from stoker import config as cfg
from stoker import storage

log = logging.getLogger(__name__)
FILES = ("report.json", "report.md", "chart.png")


def write(
    out_dir: Path,
    m: Measurements,
    d: Diagnosis,
    *,
    config: Any = None,
    tensorboard: TensorBoardVerdict | None = None,
    auto: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the three files into ``out_dir``; returns their paths. ``auto``: PIPELINE=auto's choice
    (``ingest.autotune.Choice.as_dict()`` plus its one ``line``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    body = {
        "config": cfg.to_dict(config) if config is not None else None,
        "measurements": m.as_dict(),
        "diagnosis": d.as_dict(),
        "tensorboard": tensorboard.as_dict() if tensorboard else None,
        "auto": auto,
    }
    paths = [out_dir / name for name in FILES]
    paths[0].write_text(json.dumps(body, indent=2) + "\n")
    paths[1].write_text(from_report(body))
    chart(m, d, paths[2])
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths


def from_report(body: dict[str, Any], *, level: int = 1) -> str:
    """``report.md`` from a ``report.json`` body: what ``make profile`` writes and README.md embeds.

    ``level`` is the heading level of the title (the sections go one deeper).
    """
    m = Measurements.from_dict(body["measurements"])
    d = Diagnosis.from_dict(body["diagnosis"])
    tb = TensorBoardVerdict(**body["tensorboard"]) if body.get("tensorboard") else None
    auto = (body.get("auto") or {}).get("line", "")
    return markdown(m, d, tb, title=_title(body.get("config"), m), level=level, auto=auto)


def _title(config: dict[str, Any] | None, m: Measurements) -> str:
    s = m.setup
    if config is None:
        return f"{s.dataset}, PIPELINE={s.preset}, BATCH={s.batch_size}"
    return (
        f"{config['train']['run_name']}: DATASET={s.dataset} PIPELINE={s.preset} "
        f"STRATEGY={config['strategy']['name']} BATCH={s.batch_size}"
    )


def markdown(
    m: Measurements, d: Diagnosis, tb: TensorBoardVerdict | None, *, title: str, level: int = 1, auto: str = ""
) -> str:
    """The human report: verdict, the three scenarios, the stages and the advice (``auto``: what
    PIPELINE=auto chose, one line under the verdict)."""
    ms = lambda s: f"{1e3 * s:.1f} ms"  # noqa: E731
    h = "#" * level
    lines = [
        f"{h} Profile — {title}",
        "",
        f"**Verdict: {d.verdict_text}.** {100 * d.input_fraction:.1f}% of the step time waits for input; "
        f"the step would be {d.speedup_if_input_free:.2f}x faster if input were free"
        + (f"; the costliest stage is **{d.bottleneck}**." if d.bottleneck else ".")
        + (
            f" Each step pays a **fixed cost per step** inside the compiled loop: taking its batch from the "
            f"iterator, {1e3 * m.wait_s:.2f} ms ({1e3 * m.handoff_s:.2f} ms for a batch already in memory), "
            "while every prefix of the pipeline runs far faster than the model consumes: no stage setting removes it."
            if d.cause == "per-step overhead" and d.looped
            else f" Each step pays a **fixed cost per step**: {100 * d.host_fraction:.0f}% of it is spent outside the "
            "compiled step (waiting for the batch, dispatching the step from Python), and every prefix of the "
            "pipeline runs far faster than the model consumes, so no stage setting removes it."
            if d.cause == "per-step overhead"
            else " The loops of steps compute slower over the pipeline than over a cached batch although every "
            "prefix of it runs far faster than the model consumes: **host-CPU contention** (the pipeline's "
            "threads and the step share the cores)."
            if d.cause == "host-CPU contention"
            else ""
        ),
        *(["", f"{auto}."] if auto else []),
        *(
            [
                "",
                f"**Start-up: {d.startup_s:.1f} s** before the first batch, {100 * d.startup_fraction:.0f}% of the "
                "run's estimated time (building the pipeline, then its first batch).",
            ]
            if d.startup_fraction >= STARTUP
            else []
        ),
        "",
        f"Input costs {100 * d.input_cost_fraction:.0f}% of the end-to-end step in all: the wait, plus the step "
        f"slowed from {ms(m.compute_step_s)} alone to {ms(m.compute_s)} beside the pipeline (they share the "
        f"host's CPU). The pipeline alone gives {d.input_vs_compute:.2f}x what the model consumes.",
        "",
        "| scenario | result |",
        "| --- | --- |",
        f"| input-only (pipeline alone) | {m.input_examples_per_s:,.0f} examples/s; "
        + (f"built in {m.input_build_s:.2f} s, first batch " if m.input_build_s else "first batch after ")
        + f"{m.input_first_batch_s:.2f} s{' later' if m.input_build_s else ''} |",
        f"| compute-only (one cached batch) | {ms(m.compute_step_s)} per step = "
        f"{m.compute_examples_per_s:,.0f} examples/s |",
        *(
            [
                f"| compute-only, compiled loops of {m.loop_steps} steps | {ms(m.loop_step_s)} per step; "
                f"{ms(m.host_step_s)} of each end-to-end step is spent outside it |"
            ]
            if m.loop_step_s and m.setup.steps_per_loop == 1
            else []
        ),
        f"| end-to-end (real steps) | {ms(m.step_s)} per step = input wait {ms(m.wait_s)} + compute "
        f"{ms(m.compute_s)} ({len(m.step_waits)} steps"
        + (
            f"; each wait timed inside loops of {m.setup.steps_per_loop}: {1e3 * m.wait_s:.2f} ms, "
            f"{1e3 * m.handoff_s:.2f} ms over the cached batch)"
            if m.setup.steps_per_loop > 1
            else ")"
        )
        + " |",
    ]
    if tb:
        lines.append(
            f"| TensorBoard's analyzer ({tb.steps} traced steps) | {tb.input_percent:.1f}% input: {tb.conclusion} |"
        )
    lines += [
        "",
        f"{h}# Stages",
        "",
        "Each row times the pipeline cut after that stage; *adds* is what the stage adds per 1000 examples.",
        "",
        "| + stage | examples/s | adds | share of steady time |",
        "| --- | ---: | ---: | ---: |",
    ]
    if not m.stages:  # PIPELINE=dali: one fused pipeline, no tf.data prefixes to cut
        lines[-4:] = ["No prefix timings: this pipeline is not built from tf.data stages (PIPELINE=dali)."]
    for rate, cost in zip(m.stages, d.stage_costs, strict=True):
        share = f"{100 * cost.share:.0f}%" if cost.every_epoch else "first epoch only (cached)"
        mark = " **(costliest)**" if rate.name == d.bottleneck else ""
        lines.append(f"| {rate.name}{mark} | {rate.examples_per_s:,.0f} | {ms(1000 * cost.s_per_example)} | {share} |")
    lines += ["", f"{h}# Advice", ""]
    lines += [f"- `{a.setting}`: {a.why}" for a in d.advice] or ["- nothing to change"]
    lines += [
        "",
        "Files: `report.json` (raw figures), `chart.png`; the trace opens with "
        "`make tensorboard RUN=<run>` (Profile tab).",
        "",
    ]
    return "\n".join(lines)


def chart(m: Measurements, d: Diagnosis, path: Path) -> None:
    """Two panels: prefix throughputs vs the model's appetite, and per-step wait vs compute."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [s.name for s in m.stages]
    colors = ["tab:red" if n == d.bottleneck else "tab:gray" for n in names]
    left.barh(names[::-1], [s.examples_per_s for s in m.stages][::-1], color=colors[::-1])
    left.axvline(m.compute_examples_per_s, color="tab:blue", linestyle="--", label="model consumes (compute-only)")
    left.axvline(m.input_examples_per_s, color="tab:green", linestyle=":", label="whole pipeline (input-only)")
    left.set_xscale("log")
    left.set_xlabel("examples/s (log)")
    left.set_title("pipeline prefixes: + stage")
    left.legend(loc="lower right", fontsize=8)
    steps = range(1, len(m.step_waits) + 1)
    waits = [1e3 * w for w in m.step_waits]
    right.bar(steps, [1e3 * c for c in m.step_computes], color="tab:blue", label="compute")
    right.bar(steps, waits, bottom=[1e3 * c for c in m.step_computes], color="tab:red", label="input wait")
    right.axhline(1e3 * m.compute_step_s, color="black", linestyle="--", label="compute-only step")
    if m.loop_step_s and m.setup.steps_per_loop == 1:
        right.axhline(1e3 * m.loop_step_s, color="tab:purple", linestyle=":", label=f"in loops of {m.loop_steps}")
    right.set_xlabel("end-to-end step")
    right.set_ylabel("ms")
    right.set_title(f"{d.verdict_text}: {100 * d.input_fraction:.1f}% input wait")
    right.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    if storage.is_url(path):  # matplotlib writes local files or file objects: render, then upload
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
        path.write_bytes(png.getvalue())
    else:
        fig.savefig(path, dpi=100)
    plt.close(fig)
