"""Run one suite in its own process and keep its result: rows of figures, targets, machine facts.

A suite is a module of this package with ``run(cfg) -> SuiteResult``. Each runs in a fresh
interpreter (``python -m benchmarks.runner SUITE``) so thread pools, caches and imports of one
suite never touch another's figures; the child writes ``<results_dir>/<suite>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.config import BenchConfig
from stoker import files, processes, storage

SUITES = ("ceilings", "ablation", "loaders", "position", "loops", "auto", "decode", "objectstore", "table")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal (``benchmarks.targets``): ``measured`` (a ratio) against ``wanted``; reported, never asserted.

    ``noise`` is the relative A/A spread of the suite: a target missed or met by less than it
    is within noise, and the report says so rather than calling it a result.
    """

    name: str
    wanted: float
    measured: float
    detail: str = ""
    noise: float = 0.0
    source: str = ""

    @property
    def met(self) -> bool:
        return self.measured >= self.wanted

    @property
    def within_noise(self) -> bool:
        return abs(self.measured - self.wanted) <= self.noise * self.wanted

    def as_dict(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), met=self.met, within_noise=self.within_noise)


@dataclasses.dataclass(frozen=True)
class SuiteResult:
    """What a suite measured: rows (dicts with figures and ratios), targets, A/A noise and notes.

    ``noise`` maps a row group to the relative spread of its A/A pair (the same configuration
    measured twice in the same passes).
    """

    suite: str
    rows: tuple[dict[str, Any], ...]
    targets: tuple[Target, ...] = ()
    notes: tuple[str, ...] = ()
    noise: dict[str, float] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "rows": list(self.rows),
            "targets": [t.as_dict() for t in self.targets],
            "noise": dict(self.noise),
            "notes": list(self.notes),
        }


def judge(suite: str, rows: list[dict[str, Any]], noise: dict[str, float]) -> tuple[Target, ...]:
    """The targets of ``suite`` (``benchmarks.targets``) measured on ``rows``."""
    from benchmarks import targets

    out = []
    for goal in targets.of(suite):
        group = next((r["group"] for r in rows if r["name"] == goal.numerator), None)
        by = {r["name"]: r for r in rows if r["group"] == group}  # names are unique within a group
        if goal.numerator not in by or goal.denominator not in by:
            continue  # e.g. a user's dataset, which has none of the built-in rows
        num, den = by[goal.numerator]["median"], by[goal.denominator][goal.denominator_key]
        value = num / den if den else 0.0
        detail = f"{num:,.0f} vs {den:,.0f} {by[goal.numerator]['unit']}"
        out.append(Target(goal.name, goal.wanted, round(value, 3), detail, noise.get(group, 0.0), goal.source))
    return tuple(out)


def row(group: str, name: str, tp: Any, *, unit: str, **extra: Any) -> dict[str, Any]:
    """One table row: a measurement (``as_dict()`` with median, low, high, first_s) plus ratios and notes."""
    figures = tp.as_dict()
    log.info(
        "%s | %s: %.1f %s (%.1f-%.1f), first %.2f s",
        group,
        name,
        figures["median"],
        unit,
        figures["low"],
        figures["high"],
        figures["first_s"],
    )
    return {"group": group, "name": name, "unit": unit, **figures, **extra}


def run_here(suite: str, cfg: BenchConfig) -> dict[str, Any]:
    """Run ``suite`` in this process; returns the JSON-ready result with machine facts."""
    if suite not in SUITES + ("prepare",):
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    start = time.perf_counter()
    before = machine.info()
    if suite == "prepare":
        from benchmarks import data

        return {"suite": "prepare", "made": data.prepare_all(cfg), "seconds": round(time.perf_counter() - start, 1)}
    module = importlib.import_module(f"benchmarks.{suite}")
    result: SuiteResult = module.run(cfg)
    after = machine.info()
    load = {"before": before["load_average"], "after": after["load_average"]}
    return {
        **result.as_dict(),
        "config": cfg.as_dict(),
        "machine": dict(after, load_average=load),
        "seconds": round(time.perf_counter() - start, 1),
    }


def run_isolated(suite: str, cfg: BenchConfig, out: Path, *, timeout_s: float) -> dict[str, Any]:
    """Run ``suite`` in a child interpreter (hard timeout); returns what it wrote to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.runner", suite, "--config", json.dumps(cfg.as_dict()), "--out", str(out)]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    # stderr is inherited: the child's progress log shows as it runs. Its own session: a timeout
    # stops the suite's whole tree (DataLoader workers, DALI), and it dies with this process.
    proc = processes.spawn(cmd, env=env, stdout=subprocess.DEVNULL)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        processes.stop([proc], grace_s=5.0)
        raise RuntimeError(
            f"benchmark suite {suite!r} did not finish within {timeout_s:.0f} s; "
            "use --quick or a smaller --suite selection"
        ) from None
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark suite {suite!r} failed (exit {proc.returncode}); its error is in the log above")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``python -m benchmarks.runner SUITE --config JSON --out PATH``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.runner")
    p.add_argument("suite")
    p.add_argument("--config", required=True, help="BenchConfig as JSON")
    p.add_argument("--out", required=True, help="where to write the result JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run_here(args.suite, BenchConfig(**json.loads(args.config)))
    files.atomic_write(args.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    storage.exit_process(main())  # a suite that read s3:// must not end in the AWS SDK's teardown abort
