"""``python -m training KEY=value ... [--set "a.b=c"]``: what ``make train`` runs."""

from __future__ import annotations

import logging
import os
import sys

from stoker import cli, storage

log = logging.getLogger("stoker")


def main() -> int:
    args = cli.parser("python -m training", "Train a model on a registered dataset.").parse_args()
    cli.setup_logging()
    from ingest import runconfig as run_config

    config = run_config.from_args(args.items, args.set)
    if config.strategy.name in ("multi_worker", "horovod"):
        from strategies import launch

        if launch.needs_launch(config.strategy):
            from training import assembly

            os.environ.update(assembly.prepare(config))  # the workers inherit PIPELINE=auto's choice
            cmd = [sys.executable, "-m", "training", *args.items, *(a for s in args.set for a in ("--set", s))]
            return launch.launch(config, cmd)
    from training import controller

    try:
        metrics = controller.run(config)
    except controller.Preempted:
        # The checkpoint, summaries and id files are written and closed: end now. Unwinding the loop
        # joins the input pipeline's threads, which took 5-7 s on a loaded host (measured), past
        # strategy.preempt_grace_s, after which the launcher kills the workers and the run exits 143.
        storage.exit_process(0, at_once=True)
    if metrics and "eval" in metrics and metrics["eval"]:
        log.info(
            "done: %d steps, validation accuracy %.4f, %s/metrics.json",
            metrics["steps"],
            metrics["eval"]["accuracy"],
            config.run_dir,
        )
    return 0


if __name__ == "__main__":
    cli.main_guard(main)
