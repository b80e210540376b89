"""``DATASET=table`` beside ``clicks``: the same rows, each read from its own prepared shards.

The table is clicks' train rows written as a CSV (eight numbers, the ad bucket as text, the
label) and prepared by ``DATASET=table`` (``benchmarks.data.table``): standardized numbers
and a one-hot of the ad bucket's vocabulary, where clicks stacks raw numbers and one-hots
``ad % 10``. Both read Parquet row groups into a vectorized parse, so the ratio is what the
table kind's columns and parse cost against the hand-written dataset's (issue 12: "as fast as
clicks"). Rows: the optimized pipeline without cache (the read and parse every epoch) and the
naive per-example parse, for each; clicks' optimized row again last (A/A).
"""

from __future__ import annotations

from benchmarks import data, rates, runner
from benchmarks.ablation import NAIVE, pipeline_entry
from benchmarks.config import BenchConfig
from benchmarks.runner import SuiteResult, row
from ingest.options import PipelineOptions

GROUP = "table"
AA = " (A/A repeat)"
OPTIMIZED = "optimized, batched parse (no cache)"
PER_EXAMPLE = "naive, per-example parse"


def run(cfg: BenchConfig) -> SuiteResult:
    """Table and clicks rows measured in the same passes; ``vs_clicks`` on each table row."""
    clicks, table = data.clicks(cfg), data.table(cfg)
    optimized = PipelineOptions(preset="optimized", cache=False)
    naive = NAIVE  # per-example parse: vectorize is off in the naive preset
    variants = [
        (f"clicks, {OPTIMIZED}", clicks, optimized),
        (f"table, {OPTIMIZED}", table, optimized),
        (f"clicks, {PER_EXAMPLE}", clicks, naive),
        (f"table, {PER_EXAMPLE}", table, naive),
        (f"clicks, {OPTIMIZED}{AA}", clicks, optimized),
    ]
    entries = [lambda v=v: pipeline_entry(v[1], v[2], cfg) for v in variants]
    epoch = clicks.num_examples("train") or cfg.clicks_rows
    measured = rates.one_by_one(entries, cfg, warm_examples=epoch, window=cfg.clicks_window_batches)
    by = {v[0]: tp.median for v, tp in zip(variants, measured, strict=True)}
    rows = []
    for (name, _, _), tp in zip(variants, measured, strict=True):
        extra = {}
        if name.startswith("table, "):
            extra["vs_clicks"] = rates.ratio(tp.median, by[name.replace("table, ", "clicks, ")])
        rows.append(row(GROUP, name, tp, unit="examples/s", **extra))
    noise = {GROUP: rates.spread(by[f"clicks, {OPTIMIZED}"], by[f"clicks, {OPTIMIZED}{AA}"])}
    notes = (
        f"clicks: {epoch} train rows; table: the same rows as CSV, {table.num_examples('train')} kept for training "
        f"(validation_fraction=0.005), {table.info['feature_width']} features against clicks' 18.",
        "Every row warms up over one epoch of clicks' train split, then the timed windows in two passes.",
    )
    return SuiteResult(GROUP, tuple(rows), runner.judge(GROUP, rows, noise), notes, noise)
