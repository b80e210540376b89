"""``python -m benchmarks [--quick] [--dataset NAME]``: what ``make bench`` runs.

Prepares the benchmark data, runs each suite in its own process, prints its tables, writes
``<results-dir>/<suite>.json`` and regenerates the tables of ``benchmarks/README.md``. A full run
(or ``--suite serving``) ends with ``python -m benchmarks.serving`` in its own process: it
trains a ``shapes`` run when there is none, so it is not part of smoke or ``--dataset`` runs.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import readme as readme_blocks
from benchmarks import report, runner
from benchmarks.config import BenchConfig

log = logging.getLogger("benchmarks")
HERE = Path(__file__).resolve().parent
SERVING = "serving"  # python -m benchmarks.serving: a trained run exported and served (README "Serve it")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke sizes (seconds per suite); results under runs/")
    p.add_argument("--dataset", default="", help="a registered dataset to benchmark instead of shapes and clicks")
    p.add_argument("--data-dir", default="", help="where benchmark data is made and kept (default data/bench)")
    p.add_argument(
        "--suite", action="append", choices=(*runner.SUITES, SERVING), help="run only this suite (repeatable)"
    )
    p.add_argument("--results-dir", default="", help="where <suite>.json goes (default benchmarks/results)")
    p.add_argument("--readme", default="", help="README whose tables are regenerated ('none' to skip)")
    p.add_argument("--timeout", type=float, default=0, help="seconds allowed per suite (default 1500, quick 300)")
    p.add_argument(
        "--jobs", type=int, default=1, help="suites run at the same time, each in its own process (--quick only)"
    )
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: give 1 or more")
    if args.jobs > 1 and not args.quick:
        # Suites side by side share the cores: their figures would measure each other. A smoke run
        # checks code paths only, so there it just saves time.
        p.error(f"--jobs {args.jobs} is for --quick runs only: a measured run takes its suites one at a time")
    return args


def config(args: argparse.Namespace) -> BenchConfig:
    """The run's sizes; a user's dataset keeps its data in DATA_DIR (default data/)."""
    overrides = {"dataset": args.dataset}
    if args.data_dir or args.dataset:
        overrides["data_dir"] = args.data_dir or "data"
    return BenchConfig.smoke(**overrides) if args.quick else BenchConfig.full(**overrides)


def destinations(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """Results folder and README: committed ones only for a full run of the built-in suites."""
    official = not args.quick and not args.dataset
    default = HERE / "results" if official else Path("runs") / f"bench-{args.dataset or 'quick'}"
    results = Path(args.results_dir) if args.results_dir else default
    if args.readme == "none":
        return results, None
    return results, Path(args.readme) if args.readme else (HERE / "README.md" if official else None)


def run_suites(suites: tuple[str, ...], cfg: BenchConfig, results_dir: Path, *, timeout_s: float, jobs: int) -> None:
    """Each suite in its own process, ``jobs`` at a time; prints each one's tables in suite order."""

    def one(suite: str) -> dict:
        log.info("suite %s (own process)", suite)
        return runner.run_isolated(suite, cfg, results_dir / f"{suite}.json", timeout_s=timeout_s)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        for result in pool.map(one, suites):
            sys.stdout.write(report.suite_markdown(result) + "\n")
            sys.stdout.flush()
    finally:
        pool.shutdown(cancel_futures=True)  # after a failed suite none starts, as when run one at a time


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = config(args)
    results_dir, readme = destinations(args)
    timeout = args.timeout or (300 if cfg.quick else 1500)
    asked = tuple(args.suite or (*runner.SUITES, SERVING))
    suites = tuple(s for s in asked if s != SERVING)
    serving = SERVING in asked and not cfg.quick and not cfg.dataset
    if SERVING in asked and not serving:
        log.info("suite serving is left out of smoke and --dataset runs: it trains and serves a shapes run")
    start = time.perf_counter()
    log.info("preparing benchmark data under %s", cfg.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        runner.run_isolated("prepare", cfg, Path(tmp) / "prepare.json", timeout_s=timeout)
    run_suites(suites, cfg, results_dir, timeout_s=timeout, jobs=args.jobs)
    if serving:
        log.info("suite serving (own process): python -m benchmarks.serving")
        cmd = [sys.executable, "-m", "benchmarks.serving", "--results-dir", str(results_dir)]
        subprocess.run(cmd, check=True, timeout=3 * timeout)
    if readme is not None:
        report.update_readme(readme, report.load(results_dir, runner.SUITES))
        log.info("tables regenerated in %s", readme)
    if results_dir.resolve() == (HERE / "results").resolve():
        for stale in readme_blocks.render_all():  # every README figure drawn from the committed files
            log.info("re-rendered %s", stale)
    log.info("all suites in %.0f s; results in %s", time.perf_counter() - start, results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
