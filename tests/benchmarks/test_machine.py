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


@pytest.mark.unit
def test_a_rewritten_report_keeps_its_hand_written_notes(tmp_path):
    from benchmarks.machine import NOTES, write_report

    path = tmp_path / "mouth_sync.md"
    write_report(path, "# First\n")  # a new file: nothing to keep
    assert path.read_text() == "# First\n"
    path.write_text(path.read_text() + f"\n{NOTES}\nWhy the GRID dubs differ.\n")
    write_report(path, "# Second\n")
    assert path.read_text() == f"# Second\n\n{NOTES}\nWhy the GRID dubs differ.\n"


@pytest.mark.unit
def test_the_results_arguments_name_the_files_a_report_only_run_reads(tmp_path):
    import argparse

    from benchmarks.machine import add_results_arguments, read_results

    parser = argparse.ArgumentParser()
    add_results_arguments(parser, "lrnet")
    assert vars(parser.parse_args([])) == {"out": "lrnet", "report_only": False}
    args = parser.parse_args(["--out", "lrnet_trial", "--report-only"])
    (tmp_path / "lrnet_trial.json").write_text(json.dumps({"items": [{"path": "a.mp4"}]}))
    assert args.report_only and read_results(tmp_path, args.out)["items"][0]["path"] == "a.mp4"
