"""``python -m profiles KEY=value ... [--set "a.b=c"]``: what ``make profile`` runs.

Takes the same variables as ``make train`` (DATASET, PIPELINE, STRATEGY, BATCH, RUN, ...)
plus ``profile.*`` keys through ``--set``; writes ``runs/<RUN>/profile/`` and prints the
Markdown report (verdict first) to stdout.
"""

from __future__ import annotations

import logging
import sys

from stoker import cli

log = logging.getLogger("stoker")


def main() -> int:
    args = cli.parser("python -m profiles", "Profile input against compute and name the bottleneck.").parse_args()
    cli.setup_logging()
    from ingest import runconfig as run_config

    config = run_config.from_args(args.items, args.set)
    from profiles import harness

    result = harness.profile(config)
    sys.stdout.write("\n" + (result.directory / "report.md").read_text())
    log.info("%s (%s)", result.diagnosis.summary, result.directory)
    return 0


if __name__ == "__main__":
    cli.main_guard(main)
