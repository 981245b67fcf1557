"""The README states what the code and the results files say."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks.report import README, RESULTS, blocks, detectors_block, render
from cli.main import build_parser

pytestmark = pytest.mark.unit


def test_generated_blocks_are_current():
    current = README.read_text()
    assert render(current, blocks()) == current, "run: python -m benchmarks.report"


def test_the_detector_table_has_every_detector_with_its_facts_and_scorecard_figures():
    from dfd.detectors import DETECTORS

    table = detectors_block()
    rows = {line.split("|")[1].strip(" `"): line for line in table.splitlines() if "| `" in line}
    assert set(rows) == set(DETECTORS)
    for d in DETECTORS.values():
        assert d.trained_on and d.published, f"{d.name}: trained_on and published are the table's"
        assert d.licence in rows[d.name]
    # the audio detector's raw AUC on the wild audio files, as the scorecard file has it
    audio = json.loads((RESULTS / "detection.json").read_text())["kinds"]["audio"]
    a = audio["detectors"]["audio"]
    expected = f"audio {a['auc']:.2f} ({a['n_fake_scored']}/{a['n_real_scored']})"
    assert expected in rows["audio"]


def test_render_refuses_a_readme_without_markers():
    with pytest.raises(ValueError, match="settings-table"):
        render("no markers here", {"settings-table": "x"})


def test_every_dfd_command_the_readme_shows_exists():
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    shown = set(re.findall(r"(?:`|/)dfd ([a-z]+)", README.read_text()))
    assert shown and shown <= commands, shown - commands
    assert {"analyze", "serve", "demo", "worker", "gateway", "triton", "models"} <= commands
