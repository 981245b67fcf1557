"""export.calibrate: the fits, the folds and a reproducible calibration file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dfd import calibration
from export import calibrate as cal


def test_logistic_recovers_known_parameters() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 2))
    p = 1 / (1 + np.exp(-(1.5 * x[:, 0] - 0.5 * x[:, 1] + 0.3)))
    t = (rng.random(4000) < p).astype(np.float64)
    w, b = cal.logistic(x, t)
    assert w == pytest.approx([1.5, -0.5], abs=0.15)
    assert b == pytest.approx(0.3, abs=0.1)


def test_platt_is_finite_on_separable_data_and_increasing() -> None:
    spec = cal.fit_platt([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0, 0, 0, 1, 1, 1])
    assert spec["method"] == "platt"
    assert 0 < spec["a"] < 50
    c = calibration.Platt(spec["a"], spec["b"])
    # Platt's smoothed targets (.8 and .2 on 3 items a class) keep it from certainty.
    assert 0.1 < c(0.1) < c(0.5) < c(0.9) < 0.9


def test_platt_never_reads_a_detector_upside_down() -> None:
    spec = cal.fit_platt([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [0, 0, 0, 1, 1, 1])
    assert spec["a"] == 0.0
    c = calibration.Platt(spec["a"], spec["b"])
    assert c(0.1) == pytest.approx(0.5) and c(0.9) == pytest.approx(0.5)  # the base rate


def test_fusion_weights_are_never_negative() -> None:
    rng = np.random.default_rng(4)
    good = rng.normal(size=200)
    y = (good + 0.3 * rng.normal(size=200) > 0).astype(np.float64)
    against = -good + 0.1 * rng.normal(size=200)  # anti-correlated with the label
    w, _ = cal.fit_fusion(np.stack([good, against], axis=1), y)
    assert w[0] > 0 and w[1] == 0.0
    w_free, _ = cal.logistic(np.stack([good, against], axis=1), y, l2=cal.FUSION_L2)
    assert w_free.min() < 0  # what the constraint prevents


def test_isotonic_pools_adjacent_violators() -> None:
    spec = cal.fit_isotonic([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    # (1, 0) at .2/.3 violate the order: pooled to .5 over [.2, .3].
    assert spec["x"] == [0.1, 0.2, 0.3, 0.4]
    assert spec["y"] == [0.0, 0.5, 0.5, 1.0]


def test_isotonic_only_with_enough_of_each_class() -> None:
    few = cal.fit_detector([0.1, 0.9], [0, 1])
    assert few["method"] == "platt"
    n = cal.ISOTONIC_MIN_PER_CLASS
    many = cal.fit_detector([i / (2 * n) for i in range(2 * n)], [0] * n + [1] * n)
    assert many["method"] == "isotonic"
    with pytest.raises(cal.CalibrationDataError, match="both classes"):
        cal.fit_detector([0.1, 0.2], [0, 0])


def test_folds_are_stratified_and_seeded() -> None:
    labels = [0] * 10 + [1] * 5
    folds = cal.stratified_folds(labels, 5, seed=0)
    for f in range(5):
        members = [y for y, g in zip(labels, folds, strict=True) if g == f]
        assert members.count(0) == 2 and members.count(1) == 1
    assert folds == cal.stratified_folds(labels, 5, seed=0)
    assert folds != cal.stratified_folds(labels, 5, seed=1)


def test_an_items_recording_joins_its_copies_and_variants() -> None:
    # the calibration set's cases of a GRID clip and its re-wrapped wild audio files
    assert {
        cal.recording_of(p)
        for p in (
            "original/bbaf2n.mpg",
            "reencode/bbaf2n_h264_150k.mp4",
            "noise/bbaf2n_noise.mp4",
            "trim/bbaf2n_trim1.2s.mp4",
            "dub/bbaf2n_dub_en-us_f2.mp4",
            "audio_swap/bbaf2n_voice_of_lbax4n.mp4",
            "audio/grid_voice_bbaf2n.mkv",
        )
    } == {"bbaf2n"}
    assert cal.recording_of("audio/wild_ljspeech_LJ001-0002.mkv") == "ljspeech_LJ001-0002"
    assert cal.recording_of("audio/real/ljspeech_LJ001-0002.wav") == "ljspeech_LJ001-0002"
    assert cal.recording_of("id2_vcd_swwp2s_dub_en_f3.mp4") == "id2_vcd_swwp2s"
    # a name that merely contains a marker at its start is its own recording
    assert cal.recording_of("faceswap/fake/dfdc_abofeumbvv.mp4") == "dfdc_abofeumbvv"


def test_grouped_folds_keep_a_recording_together_and_stay_stratified() -> None:
    # 12 recordings, each a real original with two variants, and 6 fakes of their own
    labels, groups = [], []
    for r in range(12):
        labels += [0, 0, 0]
        groups += [f"r{r}"] * 3
    for f in range(6):
        labels.append(1)
        groups.append(f"f{f}")
    folds = cal.stratified_folds(labels, 3, seed=0, groups=groups)
    for g in set(groups):
        assert len({f for f, gg in zip(folds, groups, strict=True) if gg == g}) == 1
    for f in range(3):
        members = [y for y, g in zip(labels, folds, strict=True) if g == f]
        assert members.count(0) == 12 and members.count(1) == 2
    assert folds == cal.stratified_folds(labels, 3, seed=0, groups=groups)
    # single items are dealt as evenly as without groups
    single = cal.stratified_folds([0] * 10 + [1] * 5, 5, seed=0, groups=[str(i) for i in range(15)])
    for f in range(5):
        members = [y for y, g in zip([0] * 10 + [1] * 5, single, strict=True) if g == f]
        assert members.count(0) == 2 and members.count(1) == 1


def test_targets_follow_what_the_kind_manipulates() -> None:
    vasa = cal.ScoredItem("wild", "v.mp4", True, "talking_head", True, {})
    assert vasa.target("visual") == 1 and vasa.target("audio") == 0
    dub = cal.ScoredItem("cal", "d.mp4", True, "dub", True, {})
    assert dub.target("audio") == 1 and dub.target("visual") == 0
    odd = cal.ScoredItem("x", "o.mp4", True, "something_new", True, {})
    assert odd.target("visual") == 1
    real = cal.ScoredItem("wild", "r.mp4", False, "audio", True, {})
    assert real.target("audio") == 0


def _scores_file(path: Path, seed: int = 3, n: int = 24) -> Path:
    """A small fixed scores file: visual informative on faces, audio on voices."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        fake = i % 2 == 1
        kind = ("faceswap", "audio", "dub")[i % 3]
        visual = (
            None
            if kind == "audio"
            else float(
                np.clip(rng.normal(0.65 if fake and kind == "faceswap" else 0.4, 0.15), 0, 1)
            )
        )
        audio = float(np.clip(rng.normal(0.7 if fake and kind != "faceswap" else 0.35, 0.15), 0, 1))
        items.append(
            {
                "path": f"item{i}.mp4",
                "label": "fake" if fake else "real",
                "kind": kind,
                "status": "scored",
                "scores": {"visual": visual, "audio": audio},
            }
        )
    items.append(
        {"path": "refused.wav", "label": "fake", "kind": "audio", "status": "refused", "scores": {}}
    )
    path.write_text(json.dumps({"version": 1, "folder": "tiny", "items": items}))
    return path


def test_calibrate_is_deterministic_and_reports_held_out_figures(tmp_path: Path) -> None:
    scores = _scores_file(tmp_path / "scores.json")
    first = cal.calibrate([scores], command="test", version="t", k=3, seed=0)
    second = cal.calibrate([scores], command="test", version="t", k=3, seed=0)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert first["data"][0]["items"] == 25 and first["data"][0]["accepted"] == 24
    loaded = calibration.parse(first)
    assert set(loaded.detectors) == {"audio", "visual"}
    cv = first["cross_validation"]
    assert cv["folds"] == 3
    assert cv["fused"]["n"] == 24  # the refused item has no scores to fuse
    assert cv["detectors"]["visual"]["n"] == 16
    assert 0.0 <= cv["fused"]["auc"] <= 1.0
    # The fused probability of an informative pair beats either detector missing.
    assert loaded.fused_raw({"visual": 0.9, "audio": 0.9}) > loaded.fused_raw(
        {"visual": 0.1, "audio": 0.1}
    )


def test_held_out_figures_are_not_the_fit(tmp_path: Path) -> None:
    # Labels unrelated to the scores: the fit on all data can look good by chance, the
    # held-out AUC must not be systematically better than chance.
    rng = np.random.default_rng(7)
    items = [
        {
            "path": f"n{i}.mp4",
            "label": "fake" if rng.random() < 0.5 else "real",
            "kind": "faceswap",
            "status": "scored",
            "scores": {"visual": float(rng.random())},
        }
        for i in range(60)
    ]
    path = tmp_path / "noise.json"
    path.write_text(json.dumps({"folder": "noise", "items": items}))
    doc = cal.calibrate([path], command="t", version="t", k=5, seed=0)
    assert doc["cross_validation"]["fused"]["auc"] < 0.7


def test_malformed_scores_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"items": []}))
    with pytest.raises(cal.CalibrationDataError, match="bad.json"):
        cal.read_scores(path)
