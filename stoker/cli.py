"""Shared command-line plumbing for the packages' ``__main__`` modules."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def setup_logging(level: int = logging.INFO) -> None:
    """Progress lines to stdout; the chatty libraries (TF, absl, Beam) to warnings only."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    for name in ("tensorflow", "absl", "apache_beam", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser taking KEY=value items and repeated --set "a.b=1 c.d=2"."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("items", nargs="*", metavar="KEY=value", help="make variables (EPOCHS=3) or dotted keys")
    p.add_argument("--set", action="append", default=[], help='dotted overrides, e.g. "pipeline.cache=false"')
    return p


def main_guard(fn: Callable[[], int]) -> None:
    """Run ``fn``; a stoker or config error prints one clear line and exits 2 (no traceback)."""
    from stoker.config import ConfigError
    from stoker.errors import StokerError
    from stoker.registry import RegistryError

    try:
        sys.exit(fn())
    except (ConfigError, StokerError, RegistryError) as err:
        logging.getLogger("stoker").error("%s", err)
        sys.exit(2)
