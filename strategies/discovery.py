"""Host discovery for a local elastic Horovod run: ``localhost:N`` in a file becomes N local host names.

Runs on the launching host, every second, as ``horovodrun --host-discovery-script`` (a script
stoker writes next to the slots file runs ``python strategies/discovery.py <slots file>``). It
imports nothing but the standard library and psutil, so each call takes well under a second.

Why N names and not ``localhost:N``: when a rank fails, Horovod's elastic driver blacklists the
*host* it ran on, and a job whose every host is blacklisted ends. With all ranks on one
``localhost`` the death of one rank would end the run; with one local name per slot
(``localhost``, ``127.0.0.1``, this machine's hostname and interface addresses: every name
horovodrun starts without ssh) only the dead rank's slot is lost. A blacklisted name is not
used again, so a slot added later goes to a name not used yet.

The slots file holds one ``host:slots`` per line; ``localhost:N`` lines are expanded as above,
other lines (real hosts) are printed unchanged. Edit it while the run trains to add or remove
slots.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

LOCAL = ("localhost", "127.0.0.1")


def _local_addresses() -> set[str]:
    """IPv4 addresses of this machine's interfaces (what horovodrun compares a host against)."""
    import psutil

    return {a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET}


def local_names() -> list[str]:
    """Distinct names horovodrun runs on this machine without ssh: each resolves to a local address."""
    addresses = _local_addresses()
    candidates = [*LOCAL, socket.gethostname(), socket.getfqdn(), *sorted(addresses - {"127.0.0.1"})]
    names: list[str] = []
    for name in candidates:
        try:
            resolved = socket.gethostbyname(name)
        except OSError:
            continue
        if resolved in addresses and name not in names:
            names.append(name)
    return names


def expand(text: str, names: list[str]) -> list[str]:
    """``host:slots`` lines with each ``localhost:N`` spread over ``names`` one slot each (round-robin
    when N exceeds them: a rank's death then loses every slot of its name)."""
    out: dict[str, int] = {}
    for line in text.split():
        host, _, slots = line.partition(":")
        count = int(slots) if slots else 1
        if host in LOCAL:
            for i in range(count):
                name = names[i % len(names)]
                out[name] = out.get(name, 0) + 1
        else:
            out[host] = out.get(host, 0) + count
    return [f"{host}:{slots}" for host, slots in out.items()]


def write(folder: Path, slots: str) -> tuple[Path, Path]:
    """Host, before launch: ``folder/slots`` (holding ``slots``, e.g. ``localhost:2``) and the executable
    ``folder/discover.sh`` that horovodrun calls; returns (script, slots file)."""
    folder.mkdir(parents=True, exist_ok=True)
    slots_file, script = folder / "slots", folder / "discover.sh"
    slots_file.write_text(slots.replace(",", "\n") + "\n")
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "{slots_file.resolve()}"\n')
    script.chmod(0o755)
    return script, slots_file


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: discovery.py SLOTS_FILE (lines of host:slots; localhost:N expands)\n")
        return 2
    text = Path(argv[0]).read_text()
    print("\n".join(expand(text, local_names())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
