"""The one free-port finder, for processes stoker starts on this machine (workers, services)."""

from __future__ import annotations

import socket

from stoker.errors import StokerError


def free_ports(n: int = 1, *, host: str = "127.0.0.1", contiguous: bool = False, tries: int = 50) -> list[int]:
    """``n`` ports free on ``host`` a moment ago; with ``contiguous``, ``p, p+1, ..., p+n-1``
    (a tf.data service cluster numbers its workers from the dispatcher's port)."""
    if not contiguous:
        socks = []
        try:
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((host, 0))
                socks.append(s)
            return [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()
    for _ in range(tries):
        base = free_ports(1, host=host)[0]
        if base + n < 65535 and all(_is_free(host, base + i) for i in range(n)):
            return list(range(base, base + n))
    raise StokerError(f"found no {n} consecutive free ports on {host} in {tries} tries")


def _is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
