"""``python -m serving export|predict KEY=value ... [--set "serve.k=v"]``: what ``make export`` and
``make predict`` run."""

from __future__ import annotations

import argparse
import logging
import shlex
import warnings

from stoker import cli

log = logging.getLogger("stoker")


def _export(args: argparse.Namespace) -> int:
    from serving import export, options

    path = export.main(options.from_args(args.items, args.set))
    log.info("wrote %s", path)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from serving import options

    try:
        from serving import predict
    except ModuleNotFoundError as err:  # Beam's TensorFlow model handler imports tensorflow_hub at import
        from stoker.errors import StokerError

        raise StokerError(
            f"make predict needs the Python package {err.name!r} (Beam's TensorFlow model handler imports it); "
            "run `make setup` (setup.py pins it)"
        ) from None

    runner = dict(i.split("=", 1) for i in args.items if "=" in i).get("RUNNER", "DirectRunner")
    summary = predict.main(
        options.from_args(args.items, args.set), runner=runner, beam_args=shlex.split(args.beam_args or "")
    )
    log.info("%d predictions in %s (%d records skipped)", summary["predictions"], summary["output"], summary["skipped"])
    return 0


class _DropBatchStatistics(logging.Filter):
    """Beam's BatchElements logs its batch-size timings on the root logger at INFO for every bundle."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("BatchElements statistics")


def main() -> int:
    cli.quiet_library_warnings()
    if not cli.verbose():  # tensorflow_hub (imported by Beam's TensorFlow handler) imports pkg_resources
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
    p = argparse.ArgumentParser(prog="python -m serving")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("export", "write a run's SavedModel (or .tflite)"), ("predict", "batch inference on Beam")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("items", nargs="*", metavar="KEY=value")
        cmd.add_argument("--set", action="append", default=[], help='dotted overrides, e.g. "serve.skip_bad=true"')
        cmd.add_argument("--beam-args", default="", help="flags passed to Beam (predict)")
    args = p.parse_args()
    cli.setup_logging()
    if not cli.verbose():
        for handler in logging.getLogger().handlers:
            handler.addFilter(_DropBatchStatistics())
    return {"export": _export, "predict": _predict}[args.command](args)


if __name__ == "__main__":
    cli.main_guard(main)
