"""The README states what the code and the results files say."""

from __future__ import annotations

import re

import pytest

from benchmarks.report import README, blocks, render
from cli.main import build_parser

pytestmark = pytest.mark.unit


def test_generated_blocks_are_current():
    current = README.read_text()
    assert render(current, blocks()) == current, "run: python -m benchmarks.report"


def test_render_refuses_a_readme_without_markers():
    with pytest.raises(ValueError, match="settings-table"):
        render("no markers here", {"settings-table": "x"})


def test_every_dfd_command_the_readme_shows_exists():
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    shown = set(re.findall(r"(?:`|/)dfd ([a-z]+)", README.read_text()))
    assert shown and shown <= commands, shown - commands
    assert {"analyze", "serve", "demo", "worker", "gateway", "triton", "models"} <= commands
