"""Keeps the README's generated blocks true: the settings table and the benchmark tables.

    .venv/bin/python -m benchmarks.report          # rewrite the blocks in README.md
    .venv/bin/python -m benchmarks.report --check  # exit 1 if README.md is out of date

Each block sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``. The settings
table comes from ``dfd.settings_doc``; the benchmark block quotes the Markdown results
files in ``benchmarks/results/`` (headings moved down two levels), so the README never
states a number that a results file does not.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from dfd.settings_doc import settings_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
# Results quoted in the README, in reading order (a missing file is an error, not a gap).
QUOTED = ("e2e_cpu.md", "stages_cpu.md", "triton_cpu.md", "gateway.md", "known_fakes.md")


def benchmark_block(results: Path = RESULTS) -> str:
    parts = []
    for name in QUOTED:
        text = (results / name).read_text().strip()
        text = re.sub(
            r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", text, flags=re.M
        )
        parts.append(f"{text}\n\n(`benchmarks/results/{name}`)")
    return "\n\n".join(parts) + "\n"


def blocks() -> dict[str, str]:
    return {"settings-table": settings_table(), "benchmarks": benchmark_block()}


def render(readme: str, generated: dict[str, str]) -> str:
    for name, body in generated.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(readme):
            raise ValueError(
                f"README.md: expected the markers <!-- {name}:start/end -->, found none"
            )
        readme = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(2), readme)
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Update the README's generated blocks.")
    parser.add_argument("--check", action="store_true", help="only check, exit 1 if stale")
    args = parser.parse_args(argv)
    current = README.read_text()
    updated = render(current, blocks())
    if args.check:
        if updated != current:
            print("README.md is out of date: run python -m benchmarks.report", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
