"""What machine a result came from: CPU model, cores, memory, load average, package versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from typing import Any

PACKAGES = (
    "tensorflow",
    "tf-keras",
    "tensorflow-io",
    "nvidia-dali-cuda120",
    "torch",
    "numpy",
    "pillow",
    "pyarrow",
    "apache-beam",
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    """Installed versions of the packages the suites compare (absent ones are left out)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def info() -> dict[str, Any]:
    """Machine facts plus the load average now (other work on a shared machine moves every figure)."""
    import psutil

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
