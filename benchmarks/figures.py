"""README.md's measured figures, rendered from the files ``python -m benchmarks.measure`` writes.

Analysis only: each renderer reads ``benchmarks/results/<family>.json`` (training, backends,
profile, service) and returns the sentence or table that carries the figures; the prose
around the blocks stays hand-written. ``python -m benchmarks.readme --check`` fails when a
block and its file disagree.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.readme import renders

RESULTS = Path("benchmarks/results")


def result(root: Path, family: str) -> dict[str, Any]:
    """``benchmarks/results/<family>.json`` under ``root``."""
    return json.loads((root / RESULTS / f"{family}.json").read_text())


def source(r: dict[str, Any]) -> str:
    """Where a figure comes from: the file (which names the command), when, and the load on the machine."""
    m = r["machine"]
    load = m["load_average"]
    return (
        f"`benchmarks/results/{r['family']}.json`, {m['time_utc'][:10]}, {m['cores']} cores, "
        f"load average {load['before'][0]:g} before, {load['after'][0]:g} after"
    )


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# ---- training --------------------------------------------------------------------------
@renders("README.md", "setup-figures")
def _setup_block(root: Path) -> str:
    r = result(root, "training")
    return (
        f"Measured ({source(r)}): `make prepare` of `shapes` took {r['prepare']['seconds']:.0f} s and the default "
        f"`make train` {r['default']['seconds']:.0f} s.\n"
    )


@renders("docs/backends.md", "training-figures")
def _training_block(root: Path) -> str:
    r = result(root, "training")
    d, p, mw = r["default"], r["pipeline"], r["multi_worker"]
    stages = p["pipeline"]["stage_time_ms"]
    why = ": the first stage holds the full-resolution convolutions" if stages[0] > 1.5 * stages[-1] else ""
    return (
        f"Measured on this machine (shared, so wall times are upper bounds; {source(r)}): `make train` "
        f"(mirrored, 2 logical CPUs, 8000 shapes, {d['epochs']} epochs) reached {_pct(d['final_eval_accuracy'])} "
        f"validation accuracy ({_pct(d['eval_accuracy'][0])} after the first epoch) in {d['seconds']:.0f} s "
        f"including start-up; one epoch of `STRATEGY=pipeline STAGES=2 MICROBATCHES=4 REMAT=1` reached "
        f"{_pct(p['final_eval_accuracy'])} (bubble {p['pipeline']['bubble_fraction']:g}, stage times "
        f"{' / '.join(f'{t:.1f}' for t in stages)} ms{why}), one epoch of `STRATEGY=multi_worker NP=2 DEVICES=1` "
        f"{_pct(mw['final_eval_accuracy'])}.\n"
    )


# ---- backends --------------------------------------------------------------------------
@renders("docs/backends.md", "backend-differences")
def _backends_block(root: Path) -> str:
    r = result(root, "backends")
    rows = r["vs_one_device"]
    each = "; ".join(
        f"{name} {v['final_loss_diff']:.1g} in final loss, {v['max_weight_diff']:.1g} in weights"
        for name, v in rows.items()
    )
    return (
        f"Measured differences from one_device ({source(r)}; training moved the weights by up to "
        f"{r['weights_moved']:.2g}): {each}.\n"
    )


# ---- profile ---------------------------------------------------------------------------
def _profile_row(name: str, rep: dict[str, Any]) -> str:
    m, d, tb = rep["measurements"], rep["diagnosis"], rep.get("tensorboard")
    setup = m["setup"]
    model = setup["batch_size"] / m["compute_step_s"]
    tb_cell = f"{tb['input_percent']:.1f}% input" if tb else "no trace"
    stage = (d["bottleneck"] or "none") + (" (after the cache)" if setup["cache"] else " (no cache)")
    return (
        f"| `PIPELINE={name}` | {d['verdict_text']}, {_pct(d['input_fraction'])} wait, "
        f"{d['speedup_if_input_free']:.2f}x if input were free | {tb_cell} | "
        f"{m['input_examples_per_s']:,.0f} vs {model:,.0f} examples/s | {stage} |"
    )


@renders("docs/profiling.md", "profile-example")
def _profile_block(root: Path) -> str:
    r = result(root, "profile")
    opt, naive = r["optimized"], r["naive"]
    cfg = opt["report"]["config"]
    setup = opt["report"]["measurements"]["setup"]
    lines = [
        f"Real runs of `{opt['command']}` ({opt['seconds']:.0f} s) and `{naive['command']}` "
        f"({naive['seconds']:.0f} s): {cfg['data']['name']}, {setup['split_examples']} train examples at "
        f"{cfg['data']['image_size']} px, {cfg['strategy']['name']} over {cfg['strategy']['devices']} logical CPUs, "
        f"BATCH={setup['batch_size']} ({source(r)}):",
        "",
        "| run | verdict (stoker) | TensorBoard's analyzer | input-only vs model | costliest stage |",
        "| --- | --- | --- | --- | --- |",
        _profile_row("optimized", opt["report"]),
        _profile_row("naive", naive["report"]),
    ]
    return "\n".join(lines) + "\n"


@renders("docs/profiling.md", "profile-tiny")
def _profile_tiny_block(root: Path) -> str:
    r = result(root, "profile")
    if "tiny" not in r:
        return "Not measured yet: run `python -m benchmarks.measure profile`.\n"
    lines = [
        f"Real runs ({source(r)}); targets written before the run (issue 14):",
        "",
        "| run | verdict (stoker) | cause | step outside the compiled step | input wait | of it, for a batch "
        "already in memory | advice | target | measured | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, target in zip(("tiny", "tiny_looped"), r["targets"], strict=True):
        d, m = r[key]["report"]["diagnosis"], r[key]["report"]["measurements"]
        step_ms = 1e3 * (m["wait_s"] + m["compute_s"])
        host_ms = d.get("host_fraction", 0.0) * step_ms
        advice = ", ".join(f"`{a['setting']}`" for a in d["advice"]) or "none"
        want = ">= " if key == "tiny" else "<= "
        run = f"`{r[key]['command']}` ({r[key]['seconds']:.0f} s)"
        # The wait for a batch already in memory: timed inside loops (looped runs), or in the
        # compute-only loops beside single steps, whose own wait is Python's next() instead.
        handoff = f"{1e3 * m['handoff_s']:.2f} ms" if key == "tiny_looped" and m.get("handoff_s") else "-"
        lines.append(
            f"| {run} | {d['verdict_text']}, {_pct(d['input_fraction'])} wait | {d['cause'] or '-'} "
            f"| {host_ms:.2f} ms of {step_ms:.2f} ms ({_pct(d.get('host_fraction', 0.0))}) "
            f"| {1e3 * m['wait_s']:.2f} ms | {handoff} | {advice} | {want}{_pct(target['wanted'])} "
            f"| {_pct(target['measured'])} | {'yes' if target['met'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


@renders("docs/profiling.md", "profile-optimized-verdict")
def _profile_verdict_block(root: Path) -> str:
    from profiles import report as profile_report  # imports TensorFlow: only when rendering

    body = profile_report.from_report(result(root, "profile")["optimized"]["report"])
    verdict = next(line for line in body.splitlines() if line.startswith("**Verdict"))
    return f"The optimized report opens with: {verdict}\n"


@renders("docs/profiling.md", "profile-naive-report")
def _profile_naive_block(root: Path) -> str:
    from profiles import report as profile_report

    return profile_report.from_report(result(root, "profile")["naive"]["report"], level=3)


# ---- service ---------------------------------------------------------------------------
def _span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


@renders("docs/scale-out.md", "service-restart")
def _restart_block(root: Path) -> str:
    r = result(root, "service")
    s = r["restart"]
    once = s["runs"]
    lost, twice = sum(x["lost_examples"] for x in once), sum(x["duplicated"] for x in once)
    text = (
        f"Worker restart, the test's scenario repeated ({source(r)}): exactly once (the default), {len(once)} runs: "
        f"lost {lost} of {len(once) * s['examples']} examples in all, ids seen twice: {twice}."
    )
    return text + _at_most_once(s) + "\n"


def _at_most_once(s: dict[str, Any]) -> str:
    """The same scenario with ``pipeline.service_exactly_once=false`` (older files hold only these runs)."""
    runs = s.get("runs_at_most_once", [])
    if not runs:
        return ""
    files = [x["lost_files"] for x in runs]
    spread = ", ".join(f"{k} files in {v} runs" for k, v in sorted(Counter(files).items()))
    twice = sum(x["duplicated"] for x in runs)
    from ingest.options import PipelineOptions
    from ingest.service import restart_loss_bound  # the bound now (it may have moved since the runs)

    bound, worst = restart_loss_bound(), max(files)
    per = PipelineOptions(preset="optimized").cycle_length
    margin = (
        f"is {bound - worst} files above the worst run"
        if bound > worst
        else "is what the worst run lost: no margin"
        if bound == worst
        else f"was exceeded by {worst - bound} files"
    )
    return (
        f" At most once (`pipeline.service_exactly_once=false`), {len(runs)} runs: lost "
        f"{_span(files)} of {s['files']} files ({_span([x['lost_examples'] for x in runs])} of {s['examples']} "
        f"examples); {spread}; ids seen twice: {twice}. That test's bound, {bound // per} x `cycle_length` = "
        f"{bound} files, {margin}."
    )


@renders("docs/scale-out.md", "service-ratio")
def _ratio_block(root: Path) -> str:
    r = result(root, "service")
    runs = r["compare"]["runs"]
    local = [x["local_examples_per_s"] for x in runs]
    remote = [x["service_examples_per_s"] for x in runs]
    ratios = [b / a for a, b in zip(local, remote, strict=True)]
    text = (
        f"**Measured here** ({source(r)}). The optimized `shapes` pipeline (64 px, no cache, batch 64) gave "
        f"{min(local):,.0f}-{max(local):,.0f} examples/s locally and {min(remote):,.0f}-{max(remote):,.0f} with 2 "
        f"service workers on the same host at most once, over {len(runs)} calls of `ingest.service.compare()`: "
        f"service / local {statistics.median(ratios):.2f} (median; {min(ratios):.2f}-{max(ratios):.2f})."
    )
    once = [x["exactly_once_examples_per_s"] for x in runs if "exactly_once_examples_per_s" in x]
    if once:
        costs = [x["exactly_once_over_at_most_once"] for x in runs]
        text += (
            f" Exactly once (the default) on the same workers: {min(once):,.0f}-{max(once):,.0f} examples/s, "
            f"exactly once / at most once {statistics.median(costs):.2f} (median; {min(costs):.2f}-{max(costs):.2f})."
        )
    return text + "\n"
