"""dfd.calibration: reading a calibration file and applying it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dfd import calibration
from dfd.calibration import Isotonic, Platt, logit, sigmoid
from dfd.errors import ConfigurationError

DOC = {
    "format": 1,
    "version": "test-1",
    "detectors": {
        "visual": {"method": "platt", "a": 2.0, "b": -1.0, "prior": 0.25},
        "audio": {"method": "isotonic", "x": [0.1, 0.5, 0.9], "y": [0.0, 0.2, 1.0]},
        "extra": {"method": "platt", "a": 1.0, "b": 0.0},
    },
    "fusion": {"weights": {"visual": 0.5, "audio": 1.5}, "bias": -0.25},
}


def test_platt_is_a_logistic_of_the_raw_log_odds() -> None:
    cal = calibration.parse(DOC)
    raw = 0.7
    assert cal.calibrated("visual", raw) == pytest.approx(sigmoid(2.0 * math.log(0.7 / 0.3) - 1.0))
    assert cal.calibrated("visual", 0.0) > 0  # clipped, never exactly 0
    assert cal.calibrated("visual", 1.0) < 1


def test_isotonic_interpolates_between_knots_and_clamps_outside() -> None:
    iso = Isotonic(x=(0.1, 0.5, 0.9), y=(0.0, 0.2, 1.0))
    assert iso(0.3) == pytest.approx(0.1)
    assert iso(0.7) == pytest.approx(0.6)
    assert iso(0.5) == pytest.approx(0.2)
    assert iso(0.0) == pytest.approx(calibration.EPS)
    assert iso(0.95) == pytest.approx(1 - calibration.EPS)


def test_fused_skips_missing_and_evidence_only_detectors() -> None:
    cal = calibration.parse(DOC)
    both = cal.fused({"visual": 0.8, "audio": 0.3})
    # Evidence = log-odds over the detector's prior (visual .25; audio has none: .5).
    assert both == pytest.approx(
        sigmoid(-0.25 + 0.5 * (logit(0.8) - logit(0.25)) + 1.5 * logit(0.3))
    )
    # A missing detector adds nothing (the same as one scoring exactly its prior).
    assert cal.fused({"visual": 0.8, "audio": None}) == pytest.approx(
        sigmoid(-0.25 + 0.5 * (logit(0.8) - logit(0.25)))
    )
    assert cal.fused({"visual": 0.8}) == pytest.approx(cal.fused({"visual": 0.8, "audio": 0.5}))
    assert cal.fused({"visual": 0.25}) == pytest.approx(sigmoid(-0.25))
    # "extra" is calibrated but has no fusion weight: evidence only.
    assert cal.fused({"visual": 0.8, "extra": 0.99}) == cal.fused({"visual": 0.8})
    assert cal.fused({}) == pytest.approx(sigmoid(-0.25))


def test_fused_raw_calibrates_first() -> None:
    cal = calibration.parse(DOC)
    raw = {"visual": 0.6, "audio": 0.7, "lipsync": 0.9}  # lipsync: not calibrated, skipped
    expected = cal.fused(
        {"visual": cal.calibrated("visual", 0.6), "audio": cal.calibrated("audio", 0.7)}
    )
    assert cal.fused_raw(raw) == pytest.approx(expected)


def test_unknown_detector_and_bad_scores_are_errors() -> None:
    cal = calibration.parse(DOC)
    with pytest.raises(ConfigurationError, match="no calibration for detector 'lipsync'"):
        cal.calibrated("lipsync", 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        cal.calibrated("visual", 1.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "expected format 1"),
        ({"detectors": {"visual": {"method": "magic"}}}, "expected method platt or isotonic"),
        ({"detectors": {"audio": {"method": "isotonic", "x": [0.5, 0.1], "y": [0, 1]}}}, "sorted"),
        ({"fusion": {"weights": {"nope": 1.0}, "bias": 0}}, "uncalibrated detectors"),
        ({"fusion": {"weights": {}}}, "missing 'bias'"),
    ],
)
def test_malformed_file_is_a_configuration_error(change: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        calibration.parse(DOC | change)


def test_load_reads_a_file_and_names_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(DOC))
    cal = calibration.load(path)
    assert cal.version == "test-1"
    assert isinstance(cal.calibrators["visual"], Platt)
    with pytest.raises(ConfigurationError, match="dfd models calibrate"):
        calibration.load(tmp_path / "missing.json")
    path.write_text("{")
    with pytest.raises(ConfigurationError, match="not JSON"):
        calibration.load(path)


def test_the_committed_calibration_loads_and_is_monotone() -> None:
    cal = calibration.load()
    assert set(cal.weights) <= set(cal.detectors)
    assert all(w >= 0 for w in cal.weights.values())
    assert cal.document["cross_validation"]["folds"] >= 2
    assert cal.document["data"] and cal.document["command"].startswith("dfd models calibrate")
    for name in cal.detectors:
        scores = [cal.calibrated(name, r / 10) for r in range(11)]
        assert all(0 < s < 1 for s in scores)
        assert scores == sorted(scores), name  # a higher raw score is never less suspicious
