"""Local launches of multi-process backends (multi_worker, horovod). Filled in by issue 4."""

from __future__ import annotations


def needs_launch(options) -> bool:
    """True when this process should start the workers instead of being one."""
    return False


def launch(config, items, sets) -> int:
    raise NotImplementedError
