"""Generated blocks in markdown: figures in prose are rendered from committed result files.

A block is the text between ``<!-- begin:NAME -->`` and ``<!-- end:NAME -->``. Its body is
whatever a renderer (a function of committed files under ``benchmarks/results/``) returns, so
no figure in a README is typed by hand: ``python -m benchmarks.readme`` rewrites every block,
and ``--check`` (run by the tests) fails when a README and the files it cites disagree.
"""

from __future__ import annotations

import re
from pathlib import Path

_BLOCK = re.compile(r"<!-- begin:([a-z0-9-]+) -->\n(.*?)<!-- end:\1 -->", re.S)


def begin(name: str) -> str:
    return f"<!-- begin:{name} -->"


def end(name: str) -> str:
    return f"<!-- end:{name} -->"


def bodies(text: str) -> dict[str, str]:
    """Every block of ``text``: name -> body (without the marker lines)."""
    return {m.group(1): m.group(2) for m in _BLOCK.finditer(text)}


def replace(text: str, name: str, body: str, *, where: str = "the text") -> str:
    """``text`` with block ``name``'s body set to ``body`` (a missing block is an error)."""
    if text.count(begin(name)) != 1 or text.count(end(name)) != 1:
        raise ValueError(
            f"{where} must hold exactly one {begin(name)} ... {end(name)} pair; add the markers where the block goes"
        )
    body = body if body.endswith("\n") else body + "\n"
    head, rest = text.split(begin(name) + "\n", 1)
    _, tail = rest.split(end(name), 1)
    return f"{head}{begin(name)}\n{body}{end(name)}{tail}"


def rewrite(path: Path, rendered: dict[str, str], *, check: bool = False) -> list[str]:
    """Set the blocks of ``path`` to ``rendered``; returns the names whose text differed.

    With ``check`` the file is left as it is: the names returned are the blocks that are stale.
    """
    text = path.read_text()
    new, stale = text, []
    for name, body in rendered.items():
        new = replace(new, name, body, where=str(path))
        if bodies(new)[name] != bodies(text).get(name):
            stale.append(name)
    if stale and not check:
        path.write_text(new)
    return stale
