"""What a benchmark records about the machine it ran on, and how it writes its results.

Numbers are only comparable between runs on the same machine under similar load, so every
results file carries this description beside them.
"""

from __future__ import annotations

import argparse
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


def add_results_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out`` (the results files' name, default ``name``) and ``--report-only`` (rewrite
    the .md from the .json, no run), for a benchmark that keeps its items in its .json."""
    parser.add_argument("--out", default=name, help=f"results/<OUT>.json and .md (default {name})")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the .md from the .json, no run"
    )


def read_results(folder: Path, name: str) -> dict[str, Any]:
    """What a run wrote to ``folder/<name>.json``."""
    doc: dict[str, Any] = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    return doc


NOTES = "<!-- notes: kept when the report is rewritten -->"


def write_report(path: Path, text: str) -> None:
    """Write a generated report, keeping the hand-written notes below :data:`NOTES`."""
    notes = ""
    if path.is_file() and NOTES in (old := path.read_text(encoding="utf-8")):
        notes = old[old.index(NOTES) :]
    path.write_text(text + ("\n" + notes if notes else ""), encoding="utf-8")
