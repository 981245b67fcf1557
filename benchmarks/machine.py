"""What a benchmark records about the machine it ran on, and how it writes its results.

Numbers are only comparable between runs on the same machine under similar load, so every
results file carries this description beside them.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
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


def write_results(
    folder: Path, name: str, report: Mapping[str, Any], markdown: str, *, echo: bool = True
) -> None:
    """Writes ``folder/<name>.json`` (``report``, indented) and ``folder/<name>.md``
    (``markdown``), making ``folder`` when missing; with ``echo`` prints the markdown too."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / f"{name}.md").write_text(markdown)
    if echo:
        print(markdown)
