"""The detection scorecard: its counts and metrics, and one run end to end on a tiny set."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_detection as bench


def _rec(path: str, label: str, kind: str, verdict: str | None, conf: float | None, **scores):
    if verdict is None:
        return {
            "path": path,
            "label": label,
            "kind": kind,
            "status": "refused",
            "verdict": None,
            "confidence": None,
            "scores": {},
            "error": {"type": "unsupported-media", "message": "no", "stage": "probe"},
        }
    return {
        "path": path,
        "label": label,
        "kind": kind,
        "status": "scored",
        "verdict": verdict,
        "confidence": conf,
        "scores": scores,
    }


RECORDS = [
    _rec("a.mp4", "fake", "faceswap", "manipulated", 0.9, visual=0.8, audio=None),
    _rec("b.mp4", "real", "faceswap", "manipulated", 0.7, visual=0.6, audio=0.2),
    _rec("c.mp4", "real", "faceswap", "authentic", 0.1, visual=0.3, audio=0.1),
    _rec("d.mp4", "fake", "faceswap", "authentic", 0.2, visual=0.7, audio=0.4),
    _rec("e.wav", "fake", "audio", None, None),
    _rec("f.mp4", "real", "audio", "inconclusive", 0.5, visual=None, audio=0.5),
]


@pytest.mark.unit
def test_group_counts_refusals_as_abstentions_and_never_drops_them() -> None:
    report = bench.build_report(RECORDS)
    assert list(report) == ["faceswap", "audio", "all"]
    allg = report["all"]
    assert allg["n"] == 6 and allg["n_fake"] == 3 and allg["n_real"] == 3
    assert allg["not_accepted"] == 1
    assert allg["not_accepted_items"] == [{"path": "e.wav", "error": "unsupported-media"}]
    assert allg["real_labelled_manipulated"] == 1
    assert allg["real_labelled_manipulated_items"] == ["b.mp4"]
    assert allg["fake_labelled_authentic"] == 1
    assert allg["fake_labelled_authentic_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert allg["abstained"] == 2  # the refusal and the inconclusive one
    assert allg["abstain_rate"] == pytest.approx(2 / 6, abs=1e-4)
    # visual: fakes .8 .7 vs reals .6 .3: every pair ordered right.
    assert allg["detectors"]["visual"]["auc"] == 1.0
    assert allg["detectors"]["visual"]["n_scored"] == 4
    # audio: fake .4 vs reals .2 .1 .5: 2 of 3 pairs.
    assert allg["detectors"]["audio"]["auc"] == pytest.approx(2 / 3, abs=1e-4)
    # fused = confidence: fakes .9 .2 vs reals .7 .1 .5 -> (3 + 1) / 6.
    assert allg["fused"]["auc"] == pytest.approx(4 / 6, abs=1e-4)
    assert report["audio"]["fused"]["auc"] is None  # one scored class only


@pytest.mark.unit
def test_markdown_lists_every_item_and_the_refusals() -> None:
    doc = bench.report_document(
        {
            "folder": "tiny",
            "machine": {"cpu": "x", "cores": 2, "load_average": [1, 1, 1]},
            "models": {"visual": "m@1"},
            "items": RECORDS,
        },
        "python -m benchmarks.bench_detection tiny",
        "detection_scores_tiny.json",
    )
    md = bench.markdown(doc)
    for r in RECORDS:
        assert f"`{r['path']}`" in md
    assert "not accepted (unsupported-media)" in md
    assert "Not accepted: 1 (1 unsupported-media)" in md
    assert "python -m benchmarks.bench_detection tiny" in md


@pytest.mark.unit
def test_labels_are_checked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        bench.read_labels(tmp_path)
    (tmp_path / "x.mp4").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("path,label,kind\nx.mp4,maybe,faceswap\n")
    with pytest.raises(ValueError, match="fake or real"):
        bench.read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("path,label,kind\ny.mp4,fake,faceswap\n")
    with pytest.raises(FileNotFoundError, match="y.mp4"):
        bench.read_labels(tmp_path)


@pytest.mark.unit
def test_raw_scores_prefer_detectors_over_modalities() -> None:
    doc = {
        "modalities": {
            "visual": {"score": 0.9, "used": True},
            "audio": {"score": None, "used": False},
        },
    }
    assert bench.raw_scores(doc) == ({"visual": 0.9, "audio": None}, "modalities")
    doc["detectors"] = {
        "meso": {"score": 0.4, "used": True},
        "aasist": {"score": 0.7, "used": False},
    }
    assert bench.raw_scores(doc) == ({"meso": 0.4, "aasist": None}, "detectors")


@pytest.mark.integration
@pytest.mark.slow
def test_scorecard_end_to_end_on_three_files(tmp_path: Path, media_dir: Path, triton) -> None:
    """A real GRID clip, an espeak-ng dub of it and an ASVspoof file, through the pipeline."""
    folder = tmp_path / "set"
    folder.mkdir()
    clip = media_dir / "grid" / "bbaf2n.mpg"
    (folder / "real.mpg").symlink_to(clip)
    speech = tmp_path / "tts.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "bin blue at f two now"], check=True)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-nostdin", "-y", "-i", str(clip), "-i", str(speech),
         "-map", "0:v", "-map", "1:a", "-af", "apad", "-shortest", "-c:v", "libx264",
         "-preset", "veryfast", "-c:a", "aac", str(folder / "dub.mp4")],
        check=True,
    )  # fmt: skip
    flac = next(iter(sorted((media_dir / "asvspoof2019_la" / "spoof").glob("*.flac"))))
    (folder / "spoof.flac").symlink_to(flac)
    (folder / "labels.csv").write_text(
        "path,label,kind,method,has_audio,has_face_guess,source\n"
        "real.mpg,real,original,GRID,yes,yes,grid\n"
        "dub.mp4,fake,dub,espeak-ng dub,yes,yes,generated\n"
        "spoof.flac,fake,audio,ASVspoof,yes,no,asvspoof\n"
    )
    results = tmp_path / "results"
    started = time.monotonic()
    assert (
        bench.main([str(folder), "--triton-url", triton.grpc_url, "--results", str(results)]) == 0
    )
    assert time.monotonic() - started < 300

    scores = json.loads((results / "detection_scores_set.json").read_text())
    by_path = {r["path"]: r for r in scores["items"]}
    assert list(by_path) == ["real.mpg", "dub.mp4", "spoof.flac"]  # none dropped
    for name in ("real.mpg", "dub.mp4"):
        r = by_path[name]
        assert r["status"] == "scored"
        assert r["verdict"] in ("manipulated", "authentic", "inconclusive", "not_applicable")
        assert 0 <= r["confidence"] <= 1
        assert any(s is not None for s in r["scores"].values())
    audio = by_path["spoof.flac"]
    if audio["status"] == "scored":  # audio-only files accepted
        assert any(s is not None for s in audio["scores"].values())
    else:
        assert audio["status"] == "refused" and audio["error"]["type"]

    report = json.loads((results / "detection_set.json").read_text())
    allg = report["kinds"]["all"]
    assert allg["n"] == 3
    assert allg["not_accepted"] == (audio["status"] != "scored")
    md = (results / "detection_set.md").read_text()
    assert "real.mpg" in md and "Machine:" in md and "bench_detection" in md

    # The metrics come back the same from the cached scores alone.
    before = report["kinds"]
    assert bench.main([str(folder), "--report-only", "--results", str(results)]) == 0
    assert json.loads((results / "detection_set.json").read_text())["kinds"] == before


@pytest.mark.unit
def test_the_verdicts_are_held_out(tmp_path: Path) -> None:
    """Each item's verdict comes from a calibration fitted on the other folds of the pool,
    through the service's own verdict rule; the served one is kept beside it."""
    from dispatcher.aggregate import MediaFacts, ScoredItems, verdict
    from export.calibrate import _as_calibration, fit, item_folds, read_scores

    rng = np.random.default_rng(1)
    records = []
    for i in range(40):
        fake = i % 2 == 0
        audio = float(np.clip(rng.normal(0.7 if fake else 0.3, 0.2), 0.01, 0.99))
        records.append(_rec(f"{i}.wav", "fake" if fake else "real", "audio", "authentic",
                            0.1, audio=audio, visual=None))  # fmt: skip
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({"folder": "set", "items": records}))
    replayed, note = bench.held_out(records, [path])
    assert note["folds"] == 5 and note["detectors"] == ["audio"]
    assert all(r["verdict_served"] == "authentic" for r in replayed)
    # item 0's verdict, by hand: the calibration of the folds without it
    items = read_scores(path).items
    folds = item_folds(items, 5, 0)
    cal = _as_calibration(
        fit([it for it, g in zip(items, folds, strict=True) if g != folds[0]], ["audio"])
    )
    found = {"audio": ScoredItems(np.asarray([records[0]["scores"]["audio"]], np.float32),
                                  ((0.0, 1.0),)), "visual": None}  # fmt: skip
    facts = MediaFacts(has_video=True, faces=1, has_audio=True, speech_s=1.0, duration_s=60.0)
    want = verdict(found, cal, {"audio": 1.0, "visual": 1.0}, 0.5, 0.1, facts)
    assert replayed[0]["confidence"] == pytest.approx(want.confidence, abs=1e-4)
    assert replayed[0]["verdict"] == want.label.value
    labels = {r["verdict"] for r in replayed}
    assert "manipulated" in labels and labels <= {"manipulated", "authentic", "inconclusive"}

    # the operating points replay the same held-out verdicts at other cuts
    points = {(p["threshold"], p["band"]): p for p in note["operating_points"]}
    served = points[(0.5, 0.1)]
    assert served["real_labelled_manipulated"] == sum(
        r["label"] == "real" and r["verdict"] == "manipulated" for r in replayed
    )
    assert served["abstain"] == sum(r["verdict"] == "inconclusive" for r in replayed)
    # a wider band abstains at least as often; no cut's authentic side reaches above 1/2
    assert points[(0.5, 0.2)]["abstain"] >= served["abstain"]
    assert all(t - b <= 0.5 for t, b in points)


@pytest.mark.unit
def test_operating_points_count_each_cut_and_keep_refusals_as_abstentions() -> None:
    records = [
        _rec("a", "fake", "audio", "manipulated", 0.9),
        _rec("b", "real", "audio", "authentic", 0.3),
        _rec("c", "fake", "audio", None, None),  # refused: no judge, stays an abstention
    ]
    prob = {"a": 0.72, "b": 0.42}

    def judge_of(p: float):
        return lambda t, b: "manipulated" if p > t + b else "authentic" if p < t - b else "x"

    judges = {("set", k): judge_of(v) for k, v in prob.items()}
    points = {
        (p["threshold"], p["band"]): p for p in bench.operating_points(records, "set", judges)
    }
    assert points[(0.5, 0.0)]["real_labelled_manipulated"] == 0
    assert points[(0.5, 0.0)]["abstain"] == 1  # only the refusal
    assert points[(0.5, 0.1)]["abstain"] == 2  # b (0.42) is in the band
    assert points[(0.4, 0.0)]["real_labelled_manipulated"] == 1  # b above 0.4
    assert points[(0.6, 0.15)]["fake_labelled_authentic"] == 0  # a (0.72) inside 0.45..0.75
    assert bench.meets_targets(points[(0.5, 0.0)])  # 0 reals, 0 fakes, 1/3 abstain
    assert not bench.meets_targets(points[(0.5, 0.1)])  # 2/3 abstain
    assert not bench.meets_targets(points[(0.4, 0.0)])  # a real labelled manipulated


@pytest.mark.unit
def test_the_audio_targets_name_the_real_recordings_and_videos_called_manipulated() -> None:
    records = [
        _rec("f1.wav", "fake", "audio", "manipulated", 0.9, audio=0.9),
        _rec("f2.wav", "fake", "audio", "manipulated", 0.8, audio=0.8),
        _rec("r1.wav", "real", "audio", "manipulated", 0.85, audio=0.95),
        _rec("r2.wav", "real", "audio", "authentic", 0.1, audio=0.1),
        _rec("v.mp4", "real", "talking_head", "manipulated", 0.7, audio=0.9),
        _rec("w.mp4", "real", "faceswap", "authentic", 0.2, audio=0.1),
    ]
    got = {
        what: (measured, ok)
        for what, measured, _, ok in bench.audio_targets(bench.build_report(records))
    }
    # fakes .9 .8 against reals .85 .1: 3 of 4 pairs ordered right
    assert got["fused AUC on the audio kind"] == ("0.75", False)
    assert got["real recordings labelled `manipulated`"] == ("1 of 2 (`r1.wav`)", False)
    assert got["real videos labelled `manipulated`"] == ("1 (`v.mp4`)", False)
    clean = [r for r in records if r["path"] not in ("r1.wav", "v.mp4")]
    assert all(ok for *_, ok in bench.audio_targets(bench.build_report(clean)))
