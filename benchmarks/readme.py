"""``python -m benchmarks.readme [--check]``: render every generated block of the READMEs.

Each entry of :data:`RENDERERS` maps (markdown file, block name) to a function that reads
committed result files and returns the block's markdown. Rendering reads files only; it never
measures. ``--check`` exits 1 and names the stale blocks when a README and its files disagree
(the tests run it), so a figure in prose cannot drift from the run that produced it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks import blocks

REPO = Path(__file__).resolve().parent.parent
Renderer = Callable[[Path], str]  # repository root -> block body
RENDERERS: dict[tuple[str, str], Renderer] = {}


def renders(path: str, name: str) -> Callable[[Renderer], Renderer]:
    """Register ``fn`` as the renderer of block ``name`` in ``path`` (relative to the repository)."""

    def add(fn: Renderer) -> Renderer:
        if (path, name) in RENDERERS:
            raise ValueError(f"block {name!r} of {path} has two renderers")
        RENDERERS[(path, name)] = fn
        return fn

    return add


def render_all(root: Path = REPO, *, check: bool = False) -> list[str]:
    """Rewrite (or with ``check`` only compare) every registered block; returns 'file: block' of stale ones."""
    _load()
    by_file: dict[str, dict[str, str]] = {}
    for (path, name), fn in RENDERERS.items():
        by_file.setdefault(path, {})[name] = fn(root)
    return [
        f"{path}: {name}"
        for path, rendered in by_file.items()
        for name in blocks.rewrite(root / path, rendered, check=check)
    ]


def _load() -> None:
    """Import the modules that register renderers (kept here so import order cannot drop one)."""
    from benchmarks import figures, report, serving  # noqa: F401  (serving: README.md's serve-figures)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.readme", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if any block is stale")
    p.add_argument("--root", type=Path, default=REPO, help="the repository whose READMEs and results to use")
    args = p.parse_args(argv)
    stale = render_all(args.root, check=args.check)
    if args.check and stale:
        sys.stderr.write(
            "generated README blocks disagree with the committed result files:\n  "
            + "\n  ".join(stale)
            + "\nrun `.venv/bin/python -m benchmarks.readme` to re-render them from the files\n"
        )
        return 1
    for s in stale:
        sys.stdout.write(f"re-rendered {s}\n")
    return 0


if __name__ == "__main__":
    # Under `python -m` this file runs as __main__, a second copy whose RENDERERS nobody fills:
    # the renderers register with the imported benchmarks.readme, so run that one's main.
    from benchmarks import readme

    sys.exit(readme.main())
