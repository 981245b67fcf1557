"""Two scorecard runs side by side: the same items, the detectors' change, changed verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import compare_scorecards as cmp
from tests.benchmarks.test_bench_detection import _rec

pytestmark = pytest.mark.unit


def _doc(visual_b: float, verdict_b: str) -> dict:
    return {
        "folder": "set",
        "models": {"visual": "meso4_df@1"},
        "items": [
            _rec("a.mp4", "fake", "faceswap", "manipulated", 0.9, visual=0.8),
            _rec("b.mp4", "real", "faceswap", verdict_b, 0.3, visual=visual_b),
            _rec("c.mp4", "real", "faceswap", "authentic", 0.1, visual=0.3),
        ],
    }


def test_the_change_per_detector_and_the_changed_verdicts(tmp_path: Path) -> None:
    a, b = _doc(0.9, "manipulated"), _doc(0.2, "authentic")
    text = cmp.compare(a, b, ("a.json", "b.json"))
    # visual ranks the fake first only in B: AUC 0.5 -> 1.0
    assert "| faceswap | visual | 0.50 | 1.00 | +0.50 |" in text
    assert "| faceswap | 1 / 0 | 0 / 0 | 0 / 0 |" in text  # real -> manipulated, A / B
    assert "## Items whose verdict changed: 1" in text and "| `b.mp4` | real |" in text
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    out = tmp_path / "cmp.md"
    assert cmp.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)]) == 0
    assert out.read_text() == text


def test_runs_over_different_items_are_refused(tmp_path: Path, capsys) -> None:
    a, b = _doc(0.9, "manipulated"), _doc(0.2, "authentic")
    b["items"] = b["items"][:2]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert cmp.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert "expected the same items in both runs, 1 differ (e.g. c.mp4)" in capsys.readouterr().err
