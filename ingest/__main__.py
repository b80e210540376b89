"""``python -m ingest prepare|datasets|service``: what ``make prepare``, ``make datasets`` and
``make data-service`` run."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from stoker import cli
from stoker.errors import DataError

log = logging.getLogger("stoker")


def _prepare(args: argparse.Namespace) -> int:
    from ingest import datasets, validation
    from ingest import runconfig as run_config

    config = run_config.from_args(args.items, args.set)
    runner = dict(i.split("=", 1) for i in args.items if "=" in i).get("RUNNER", "DirectRunner")
    dataset = datasets.get(config.data)
    info = validation.prepare(dataset, runner=runner, beam_args=shlex.split(args.beam_args or ""))
    for split, meta in info.get("splits", {}).items():
        log.info(
            "%s/%s: %d examples in %d files", dataset.name, split, meta["num_examples"], len(meta.get("shards", []))
        )
    return 0


def _validate(args: argparse.Namespace) -> int:
    """``make validate DATASET=... [SOURCE=new data]``: one line per anomaly, exit 1 on any."""
    from ingest import datasets, validation
    from ingest import runconfig as run_config

    items = dict(i.split("=", 1) for i in args.items if "=" in i)
    new_source = items.pop("SOURCE", "")
    config = run_config.from_args([f"{k}={v}" for k, v in items.items()], args.set)
    dataset = datasets.get(config.data)
    if not dataset.is_prepared():
        raise DataError(
            f"dataset {dataset.name!r} is not prepared under {dataset.root}: run `make prepare DATASET=...`"
        )
    found = validation.check_dataset(
        dataset, new_source, runner=items.get("RUNNER", "DirectRunner"), beam_args=shlex.split(args.beam_args or "")
    )
    what = f"SOURCE={new_source}" if new_source else f"the files of {dataset.name}"
    sys.stdout.write("".join(f"{a}\n" for a in found))
    if found:
        log.error("%d anomal%s in %s (feature -> anomaly -> file)", len(found), "y" if len(found) == 1 else "ies", what)
        return 1
    log.info("%s: no anomalies against %s/schema.pbtxt", what, dataset.root)
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
    cli.quiet_library_warnings()  # before service_cli's imports below
    p = argparse.ArgumentParser(prog="python -m ingest")
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write a dataset's files (Beam job)")
    prep.add_argument("items", nargs="*")
    prep.add_argument("--set", action="append", default=[])
    prep.add_argument("--beam-args", default="", help="flags passed to Beam, e.g. '--flink_master=host:8081'")
    check = sub.add_parser("validate", help="check a dataset's files, or new data (SOURCE=), against its schema")
    check.add_argument("items", nargs="*")
    check.add_argument("--set", action="append", default=[])
    check.add_argument("--beam-args", default="", help="flags passed to Beam")
    listing = sub.add_parser("datasets", help="list registered datasets and folders prepared from SOURCE")
    listing.add_argument("items", nargs="*")
    svc = sub.add_parser("service", help="run a tf.data service dispatcher and workers")
    from ingest import service_cli  # the flags and their defaults, from ClusterSpec

    service_cli.add_cluster_args(svc)
    args = p.parse_args()
    cli.setup_logging()
    commands = {"prepare": _prepare, "validate": _validate, "datasets": _datasets, "service": _service}
    return commands[args.command](args)


if __name__ == "__main__":
    cli.main_guard(main)
