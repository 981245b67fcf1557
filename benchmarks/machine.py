"""What a benchmark records about the machine it ran on.

Numbers are only comparable between runs on the same machine under similar load, so every
results file carries this description beside them.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``; else ``platform.processor()``; else "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded (how busy the shared machine was)."""
    return [round(x, 2) for x in os.getloadavg()]


def describe(**extra: Any) -> dict[str, Any]:
    """CPU model, core count, Python and OS, then ``extra`` (what a benchmark adds)."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **extra,
    }
