"""Tables from result JSON: printed by the CLI and rendered into the READMEs' generated blocks.

Analysis only: reads what the suites wrote, never measures. The READMEs keep their prose; the
figures sit in blocks (``benchmarks.blocks``) that the renderers below rebuild from
``benchmarks/results/*.json``, so a figure in prose cannot drift from the committed run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import blocks
from benchmarks.readme import renders
from benchmarks.runner import SUITES

RESULTS = Path("benchmarks/results")
RATIOS = (
    "x_naive",
    "stoker_over_this",
    "vs_optimized",
    "x_optimized_per_example",
    "vs_buffer_shuffle",
    "vs_local_disk",
    "vs_clicks",
)  # compared with A/A noise
# Extra columns, in this order, shown when any row of a group has them: (key, header, format).
COLUMNS = (
    ("x_naive", "x naive", "{:.2f}"),
    ("vs_optimized", "vs optimized", "{:.2f}"),
    ("vs_buffer_shuffle", "vs buffer shuffle", "{:.2f}"),
    ("vs_local_disk", "vs local disk", "{:.2f}"),
    ("vs_clicks", "table / clicks", "{:.2f}"),
    ("x_optimized_per_example", "x optimized per-example", "{:.2f}"),
    ("of_bound", "of decode bound", "{:.0%}"),
    ("stoker_over_this", "stoker / this", "{:.2f}"),
    ("bound", "bound (best window)", "{:,.0f}"),
    ("x_cores", "x cores", "{:,.0f}"),
    ("x_one_core", "x one core", "{:.2f}"),
    ("mib_s", "MiB/s", "{:,.0f}"),
    ("records_s", "records/s", "{:,.0f}"),
    ("first_epoch_per_s", "first epoch (examples/s)", "{:,.0f}"),
    ("batch", "batch: image, label", None),
)
TITLES = {
    "decode": "Decode: the bound and the one-thread references",
    "parse": "Parse ceiling",
    "read": "Read ceiling",
    "image": "Image ablation (shapes 256 px -> 224 crop, batch 64)",
    "clicks": "clicks (Parquet, tabular)",
    "table": "DATASET=table beside clicks (the same rows: CSV prepared by the table kind, and clicks' Parquet)",
    "artificial": "tf.data guide's ArtificialDataset (seconds per benchmark() call, lower is better)",
    "loaders": "Loaders (same JPEGs, same batches: float32 images, int64 labels)",
    "order": "Training order: buffer shuffle with iterator state vs addressed by input position",
    "shuffle quality": "Shuffle quality of the first epoch (uniform: tau 0, same-shard share 1 / shards)",
    "checkpoint": "Checkpoint of the default model and Adam: what the input state adds",
    "loop clicks": "Steps per compiled call, clicks MLP (training examples/s, one device)",
    "loop synthetic": "Steps per compiled call, 64 px CNN on synthetic images (training examples/s, one device)",
    "object storage: records": "Object storage, read path: local disk vs s3:// on a local server (one host: overhead)",
    "object storage: pipeline": "Object storage, optimized pipeline without cache: disk vs s3:// (one host)",
}
SAME = " ~"  # marks a ratio within the group's A/A spread


def _fmt(value: float) -> str:
    return f"{value:,.3f}" if value < 10 else f"{value:,.0f}"


def _rate(r: dict[str, Any]) -> str:
    if "seconds" in r:
        return f"{r['seconds']:.3f} s ({r['seconds_low']:.3f}-{r['seconds_high']:.3f})"
    return f"{_fmt(r['median'])} ({_fmt(r['low'])}-{_fmt(r['high'])})"


def _batch(b: dict[str, Any]) -> str:
    return ", ".join(f"{v['type']} {v['dtype']} {v['shape']}" for v in b.values()) if b else ""


def _cell(r: dict[str, Any], key: str, fmt: str | None, noise: float | None) -> str:
    if key not in r:
        return ""
    value = r[key]
    if fmt is None:
        return _batch(value)
    text = fmt.format(value)
    if key in RATIOS and noise is not None and value != 1 and abs(value - 1) <= noise:  # 1 exactly: the base row
        text += SAME
    if key == "of_bound" and value > 1:
        text += " (above the bound: not a limit)"
    return text


def group_table(rows: list[dict[str, Any]], noise: float | None = None) -> str:
    """A markdown table of one group's rows: median (min-max), ratios, time to first batch."""
    if "median" not in rows[0]:
        return plain_table(rows)
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    units = {r["unit"] for r in rows}
    unit = "time" if "seconds" in rows[0] else rows[0]["unit"] if len(units) == 1 else "rate"
    head = ["row", f"{unit}, median (min-max)", *(h for _, h, _ in cols), "first (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = r["name"] if len(units) == 1 else f"{r['name']} ({r['unit']})"
        cells = [name, _rate(r), *(_cell(r, k, fmt, noise) for k, _, fmt in cols), f"{r['first_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plain_table(rows: list[dict[str, Any]]) -> str:
    """Rows of figures that are not rates (quality, sizes): one column per key, in first-seen order."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("group", "name", "unit")]
    lines = ["| row | " + " | ".join(k.replace("_", " ") for k in keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for r in rows:
        lines.append("| " + " | ".join([r["name"], *(_plain(r.get(k, "")) for k in keys)]) + " |")
    return "\n".join(lines)


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def verdict(t: dict[str, Any]) -> str:
    """'yes' or '**no**', and whether the difference from the target is inside the A/A noise."""
    word = "yes" if t["met"] else "**no**"
    return f"{word}, within noise (±{t['noise']:.0%})" if t.get("within_noise") else word


def targets_table(targets: list[dict[str, Any]]) -> str:
    """Targets with the measured ratio, whether each was met, and who set it."""
    lines = ["| target | wanted | measured | met | set by | detail |", "|---|---|---|---|---|---|"]
    for t in targets:
        lines.append(
            f"| {t['name']} | >= {t['wanted']:g} | {t['measured']:.2f} | {verdict(t)} | {t.get('source', '')} "
            f"| {t['detail']} |"
        )
    return "\n".join(lines)


def machine_line(result: dict[str, Any]) -> str:
    """One line: CPU, cores, memory, load average before/after, main versions, duration."""
    m = result["machine"]
    load = m["load_average"]
    pk = m["packages"]
    versions = ", ".join(f"{k} {pk[k]}" for k in ("tensorflow", "nvidia-dali-cuda120", "torch") if k in pk)
    return (
        f"{m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GB; load average (1/5/15 min) "
        f"before {load['before']}, after {load['after']}; {versions}; {result['seconds']:.0f} s at {m['time_utc']}"
    )


def noise_line(result: dict[str, Any]) -> str:
    """The A/A spread of each group, and what ``~`` means."""
    noise = result.get("noise") or {}
    if not noise:
        return ""
    spreads = ", ".join(f"{TITLES.get(g, g).split(' (')[0]} {v:.1%}" for g, v in noise.items())
    return (
        f"A/A spread (one configuration measured twice in the same passes): {spreads}. "
        f"A ratio marked `{SAME.strip()}` differs from 1 by less than its group's spread: no measurable difference."
    )


def suite_markdown(result: dict[str, Any]) -> str:
    """One suite: machine line, targets, then one table per group."""
    parts = [f"### {result['suite']}", "", f"_{machine_line(result)}_", ""]
    if result.get("targets"):
        parts += [targets_table(result["targets"]), ""]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in result["rows"]:
        groups.setdefault(r["group"], []).append(r)
    noise = result.get("noise") or {}
    for group, rows in groups.items():
        parts += [f"**{TITLES.get(group, group)}**", "", group_table(rows, noise.get(group)), ""]
    if line := noise_line(result):
        parts += [f"- {line}"]
    parts += [f"- {n}" for n in result.get("notes", [])]
    return "\n".join(parts).rstrip() + "\n"


def load(results_dir: Path, suites: tuple[str, ...] = SUITES) -> list[dict[str, Any]]:
    """The results present in ``results_dir``, in suite order."""
    paths = [results_dir / f"{s}.json" for s in suites]
    return [json.loads(p.read_text()) for p in paths if p.is_file()]


def tables(results: list[dict[str, Any]]) -> str:
    """Every suite's markdown, for the ``tables`` block."""
    return "<!-- generated by `make bench` from benchmarks/results/*.json -->\n\n" + "\n".join(
        suite_markdown(r) for r in results
    )


def update_readme(readme: Path, results: list[dict[str, Any]]) -> None:
    """Replace the ``tables`` block of ``readme`` with tables from ``results``."""
    readme.write_text(blocks.replace(readme.read_text(), "tables", tables(results), where=str(readme)))


# ---- renderers of the committed READMEs (python -m benchmarks.readme) ----------------------
def _official(root: Path) -> dict[str, dict[str, Any]]:
    return {r["suite"]: r for r in load(root / RESULTS)}


def _rows(result: dict[str, Any], group: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in result["rows"] if r["group"] == group}


@renders("benchmarks/README.md", "tables")
def _tables_block(root: Path) -> str:
    return tables(load(root / RESULTS))


def run_line(results: dict[str, dict[str, Any]]) -> str:
    """When the committed run ran, how long, and under what load."""
    times = sorted(r["machine"]["time_utc"] for r in results.values())
    loads = [
        x
        for r in results.values()
        for x in (r["machine"]["load_average"]["before"][0], r["machine"]["load_average"]["after"][0])
    ]
    total = sum(r["seconds"] for r in results.values())
    return (
        f"Committed run: suites ending {times[0]} to {times[-1]} UTC, {total:.0f} s for all {len(times)} suites; "
        f"1-minute load average {min(loads):.1f}-{max(loads):.1f} at the suites' starts and ends."
    )


@renders("benchmarks/README.md", "targets")
def _targets_block(root: Path) -> str:
    results = _official(root)
    targets = [t for s in SUITES if s in results for t in results[s]["targets"]]
    return f"{run_line(results)}\n\n{targets_table(targets)}\n"


@renders("docs/benchmarks.md", "bench-summary")
def _summary_block(root: Path) -> str:
    results = _official(root)
    by = {t["name"]: t for s in SUITES if s in results for t in results[s]["targets"]}
    said = "; ".join(
        f"{name} {t['measured']:.2f} (target {t['wanted']:g}: {verdict(t).replace('**', '')})" for name, t in by.items()
    )
    return f"Last committed run ({sum(r['seconds'] for r in results.values()):.0f} s): {said}.\n"


def compare(a: float, b: float, noise: float, *, a_name: str, b_name: str) -> str:
    """'A is 1.23x B' or 'no measurable difference between A and B (1.02x, A/A spread 4%)'."""
    r = a / b if b else 0.0
    if abs(r - 1) <= noise:
        return f"no measurable difference between {a_name} and {b_name} ({r:.2f}x, A/A spread {noise:.0%})"
    return f"{a_name} is {r:.2f}x {b_name} (A/A spread {noise:.0%})"


def findings(results: dict[str, dict[str, Any]]) -> list[str]:
    """Sentences about the committed run, each computed from its rows (no figure typed by hand)."""
    out = []
    if "ablation" in results:
        ab = results["ablation"]
        rows, clicks = _rows(ab, "image"), _rows(ab, "clicks")
        img, ck = ab["noise"].get("image", 0.0), ab["noise"].get("clicks", 0.0)
        bound = rows["decode bound"]
        opt = rows["optimized"]["median"]
        ref = rows["reference: decode on 1 thread over memory, x cores"]
        out.append(
            f"Image: `optimized` reads {opt:,.0f} examples/s, {opt / bound['bound']:.0%} of the decode bound "
            f"({bound['bound']:,.0f}: {bound['how']}); the one-thread reference times the cores would say "
            f"{ref['x_cores']:,.0f}, which is why it is not used as a limit. Naive: {rows['naive']['median']:,.0f}."
        )
        for name in ("optimized, map fusion off", "optimized, no cache", "optimized, full decode then crop"):
            if name in rows:
                out.append(
                    "Image: " + compare(rows[name]["median"], opt, img, a_name=f"`{name}`", b_name="`optimized`") + "."
                )
        cached = rows["optimized"]
        out.append(
            f"Image: `optimized` fills its cache in its first epoch at {cached['first_epoch_per_s']:,.0f} examples/s "
            f"(steady: {cached['median']:,.0f})."
        )
        rows = clicks
        per_ex, opt_ex = rows["per-example parse (naive)"]["median"], rows["optimized, per-example parse"]["median"]
        seq = rows.get("optimized, per-example parse, sequential interleave", {}).get("median")
        text = "clicks: " + compare(opt_ex, per_ex, ck, a_name="optimized with `vectorize=false`", b_name="naive")
        if seq:
            text += "; with a sequential interleave, " + compare(
                seq, opt_ex, ck, a_name="it", b_name="the parallel interleave"
            )
        out.append(text + ".")
        batched = rows["optimized, batched parse"]
        out.append(
            f"clicks: the optimized batched pipeline is {batched['x_naive']:.2f}x the naive per-example one and "
            f"{batched['x_optimized_per_example']:.2f}x the optimized per-example one (the handicapped denominator)."
        )
        arrow = rows["batched parse, pyarrow reader"]["median"] / rows["per-example parse, pyarrow reader"]["median"]
        out.append(
            f"clicks: with the pyarrow reader, batched over per-example parse in the naive pipeline: {arrow:.2f}x."
        )
    if "loaders" in results:
        lo = results["loaders"]
        rows, noise = _rows(lo, "loaders"), lo["noise"].get("loaders", 0.0)
        stoker = rows["stoker optimized"]["median"]
        for name in ("plain tf.data, stoker's per-image function", "plain tf.data", "DALI CPU", "PyTorch DataLoader"):
            out.append("Loaders: " + compare(stoker, rows[name]["median"], noise, a_name="stoker", b_name=name) + ".")
    if "table" in results:
        tab = results["table"]
        rows, noise = _rows(tab, "table"), tab["noise"].get("table", 0.0)
        for kind in ("optimized, batched parse (no cache)", "naive, per-example parse"):
            a, b = rows[f"table, {kind}"]["median"], rows[f"clicks, {kind}"]["median"]
            out.append(f"DATASET=table, {kind}: " + compare(a, b, noise, a_name="the table", b_name="clicks") + ".")
    return out


@renders("docs/pipeline.md", "auto-choices")
def _auto_block(root: Path) -> str:
    results = _official(root)
    if "auto" not in results:
        return "No committed `auto` suite yet: `make bench` writes one.\n"
    lines = [
        "| dataset | `auto` chose | tuning | `auto` | best hand-tuned row | `auto` / best |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for group in sorted({r["group"] for r in results["auto"]["rows"]}):
        rows = _rows(results["auto"], group)
        auto = rows["auto"]
        hand = {n: r for n, r in rows.items() if n != "auto" and "A/A" not in n}
        best = max(hand, key=lambda n: hand[n]["median"])
        chose = ", ".join(f"{k}={v}" for k, v in sorted(auto["chose"].items())) or "(nothing measured)"
        lines.append(
            f"| {group.removeprefix('auto ')} | {chose} | {auto['tuning_s']} s | {auto['median']:,.0f}/s | "
            f"{best} ({hand[best]['median']:,.0f}/s) | {auto['median'] / hand[best]['median']:.2f} |"
        )
    return "\n".join(lines) + "\n"


@renders("benchmarks/README.md", "findings")
def _findings_block(root: Path) -> str:
    return "".join(f"- {line}\n" for line in findings(_official(root)))
