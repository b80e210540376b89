"""``python -m ingest prepare|datasets|service``: what ``make prepare``, ``make datasets`` and
``make data-service`` run."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from stoker import cli

log = logging.getLogger("stoker")


def _prepare(args: argparse.Namespace) -> int:
    from ingest import datasets
    from ingest import runconfig as run_config

    config = run_config.from_args(args.items, args.set)
    runner = dict(i.split("=", 1) for i in args.items if "=" in i).get("RUNNER", "DirectRunner")
    dataset = datasets.get(config.data)
    info = dataset.prepare(runner=runner, beam_args=shlex.split(args.beam_args or ""))
    for split, meta in info.get("splits", {}).items():
        log.info(
            "%s/%s: %d examples in %d files", dataset.name, split, meta["num_examples"], len(meta.get("shards", []))
        )
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from ingest import datasets
    from ingest import runconfig as run_config

    data_dir = run_config.from_args(args.items, []).data.data_dir
    rows = []
    for name, origin in datasets.names(data_dir).items():
        doc = (datasets.lookup(name, data_dir).__doc__ or "").strip().splitlines()
        rows.append((name, origin, doc[0] if doc else ""))
    width = max(len(r[0]) for r in rows)
    out = [f"{'name':<{width}}  {'from':<22} description"] + [f"{n:<{width}}  {o:<22} {d}" for n, o, d in rows]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _service(args: argparse.Namespace) -> int:
    from ingest import service_cli

    return service_cli.main(args)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m ingest")
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write a dataset's files (Beam job)")
    prep.add_argument("items", nargs="*")
    prep.add_argument("--set", action="append", default=[])
    prep.add_argument("--beam-args", default="", help="flags passed to Beam, e.g. '--flink_master=host:8081'")
    listing = sub.add_parser("datasets", help="list registered datasets and folders prepared from SOURCE")
    listing.add_argument("items", nargs="*")
    svc = sub.add_parser("service", help="run a tf.data service dispatcher and workers")
    from ingest import service_cli  # the flags and their defaults, from ClusterSpec

    service_cli.add_cluster_args(svc)
    args = p.parse_args()
    cli.setup_logging()
    return {"prepare": _prepare, "datasets": _datasets, "service": _service}[args.command](args)


if __name__ == "__main__":
    cli.main_guard(main)
