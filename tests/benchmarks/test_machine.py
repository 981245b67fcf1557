"""What every benchmark writes: its report as JSON and Markdown, side by side."""

from __future__ import annotations

import json

import pytest

from benchmarks.machine import write_results


@pytest.mark.unit
@pytest.mark.parametrize("echo", [True, False])
def test_write_results_writes_both_files_and_prints_the_markdown(tmp_path, capsys, echo):
    folder = tmp_path / "results" / "new"  # made when missing
    report = {"when": "2026-12-02 00:00 UTC", "cells": [{"p50_ms": 1.5}]}
    write_results(folder, "soak_cpu", report, "# Soak\n\n| a |\n", echo=echo)
    written = (folder / "soak_cpu.json").read_text()
    assert json.loads(written) == report and written.endswith("}\n")
    assert (folder / "soak_cpu.md").read_text() == "# Soak\n\n| a |\n"
    assert sorted(p.name for p in folder.iterdir()) == ["soak_cpu.json", "soak_cpu.md"]
    assert capsys.readouterr().out == ("# Soak\n\n| a |\n\n" if echo else "")
