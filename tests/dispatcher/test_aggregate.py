"""Verdict, label and per-second timeline from per-item scores, through a calibration."""

from __future__ import annotations

import numpy as np
import pytest

from dfd.calibration import logit, parse, sigmoid
from dfd.states import Label
from dispatcher.aggregate import (
    MediaFacts,
    ScoredItems,
    SecondScore,
    fusion_weights,
    label_for,
    suspicious_order,
    timeline,
    verdict,
)

pytestmark = pytest.mark.unit

# Identity calibrations (a=1, b=0) at prior 0.5 and no bias: the fused probability is
# sigmoid(sum of w * logit(score)), easy to check by hand. Visual is weighted 0, as the
# committed calibration fits Meso4 on today's fakes.
CAL = parse(
    {
        "format": 1,
        "version": "test",
        "detectors": {
            n: {"method": "platt", "a": 1.0, "b": 0.0, "prior": 0.5}
            for n in ("visual", "audio", "lipsync")
        },
        "fusion": {"weights": {"visual": 0.0, "audio": 1.0, "lipsync": 0.5}, "bias": 0.0},
    }
)
ALL = {"visual": 1.0, "audio": 1.0, "lipsync": 1.0}
# A 3 s video with a face and speech.
FACTS = MediaFacts(has_video=True, faces=3, has_audio=True, speech_s=2.0, duration_s=3.0)


def fused(**scores: float) -> float:
    w = {"visual": 0.0, "audio": 1.0, "lipsync": 0.5}
    return sigmoid(sum(w[n] * logit(p) for n, p in scores.items()))


def run(found, scales=ALL, facts=FACTS, cal=CAL):
    full = {"visual": None, "audio": None, "lipsync": None, **found}
    return verdict(full, cal, scales, 0.5, 0.1, facts)


def items(scores, spans):
    return ScoredItems(np.asarray(scores, dtype=np.float32), tuple(spans))


@pytest.mark.parametrize(
    ("confidence", "expected"),
    [
        (0.0, Label.AUTHENTIC),
        (0.39, Label.AUTHENTIC),
        (0.4, Label.INCONCLUSIVE),
        (0.5, Label.INCONCLUSIVE),
        (0.6, Label.INCONCLUSIVE),
        (0.61, Label.MANIPULATED),
        (1.0, Label.MANIPULATED),
    ],
)
def test_label_band_around_threshold(confidence, expected):
    assert label_for(confidence, 0.5, 0.1) is expected


def test_label_without_signal_is_inconclusive():
    assert label_for(0.99, 0.5, 0.1, enough_signal=False) is Label.INCONCLUSIVE


def test_label_with_zero_band():
    assert label_for(0.5, 0.5, 0.0) is Label.INCONCLUSIVE
    assert label_for(0.51, 0.5, 0.0) is Label.MANIPULATED


def test_verdict_fuses_calibrated_detector_means():
    v = run(
        {
            "visual": items([0.2, 0.4], [(0, 1), (1, 2)]),
            "audio": items([0.9], [(0, 4)]),
            "lipsync": items([0.5, 0.7], [(0, 1), (1, 2)]),
        }
    )
    assert v.scores == pytest.approx({"visual": 0.3, "audio": 0.9, "lipsync": 0.6})
    assert v.calibrated == pytest.approx({"visual": 0.3, "audio": 0.9, "lipsync": 0.6}, abs=1e-4)
    assert v.confidence == pytest.approx(fused(audio=0.9, lipsync=0.6), abs=1e-4)
    assert v.label is Label.MANIPULATED
    assert v.used == {"visual": True, "audio": True, "lipsync": True}
    # shares of the fusion weight among those that looked; visual is fitted to 0
    assert v.weights == pytest.approx({"visual": 0.0, "audio": 2 / 3, "lipsync": 1 / 3})


def test_a_missing_detector_adds_nothing():
    v = run(
        {"audio": items([0.1, 0.3], [(0, 4), (2, 6)])},
        facts=MediaFacts(has_video=True, faces=0, has_audio=True, speech_s=5.0, duration_s=6.0),
    )
    assert v.used == {"visual": False, "audio": True, "lipsync": False}
    assert v.weights == {"visual": 0.0, "audio": 1.0, "lipsync": 0.0}
    assert v.scores["visual"] is None and v.calibrated["lipsync"] is None
    assert v.confidence == pytest.approx(0.2, abs=1e-4)
    assert v.label is Label.AUTHENTIC


def test_scales_shrink_a_modalitys_fitted_weight():
    found = {"audio": items([0.9], [(0, 4)]), "lipsync": items([0.2], [(0, 1)])}
    half = run(found, {**ALL, "audio": 0.5})
    assert half.confidence == pytest.approx(sigmoid(0.5 * logit(0.9) + 0.5 * logit(0.2)), abs=1e-4)
    assert fusion_weights(["visual", "audio", "lipsync"], CAL, {**ALL, "audio": 0.5}) == {
        "visual": 0.0,
        "audio": 0.5,
        "lipsync": 0.5,
    }


def test_verdict_with_nothing_used_is_not_applicable_and_says_what_was_missing():
    facts = MediaFacts(has_video=True, faces=0, has_audio=True, speech_s=0.0, duration_s=3.0)
    v = run({}, facts=facts)
    assert v.label is Label.NOT_APPLICABLE
    assert v.confidence == 0.5  # sigmoid(bias 0): nothing looked
    assert not any(v.used.values())
    assert [code for code, _ in v.reasons] == ["no-face", "no-speech"]
    assert v.unused_reason == {"visual": "no-face", "audio": "no-speech", "lipsync": "no-face"}
    # an audio file without speech, and a silent video without a track
    tone = MediaFacts(has_video=False, faces=0, has_audio=True, speech_s=0.0, duration_s=5.0)
    assert [c for c, _ in run({}, facts=tone).reasons] == ["no-video", "no-speech"]
    mute = MediaFacts(has_video=True, faces=0, has_audio=False, speech_s=0.0, duration_s=5.0)
    assert [c for c, _ in run({}, facts=mute).reasons] == ["no-face", "no-audio"]


def test_a_silent_face_video_seen_only_by_the_weak_visual_detector_is_inconclusive():
    facts = MediaFacts(has_video=True, faces=3, has_audio=False, speech_s=0.0, duration_s=3.0)
    for score in (0.05, 0.99):  # weighted 0: neither clears nor condemns
        v = run({"visual": items([score], [(0, 1)])}, facts=facts)
        assert v.label is Label.INCONCLUSIVE
        assert [code for code, _ in v.reasons] == ["weak-detectors-only", "no-audio"]
        assert v.unused_reason["audio"] == "no-audio"


def test_authentic_needs_a_detector_able_to_clear_the_media():
    v = run({"visual": items([0.1], [(0, 1)]), "audio": items([0.05], [(0, 4)])})
    assert v.label is Label.AUTHENTIC
    assert [code for code, _ in v.reasons][0] == "score-below-threshold"
    # lip-sync alone (it cannot clear) finding nothing is not authentic
    weak = run({"lipsync": items([0.01], [(0, 1)])})
    assert weak.confidence < 0.4
    assert weak.label is Label.INCONCLUSIVE
    assert "weak-detectors-only" in [code for code, _ in weak.reasons]


def test_a_detector_that_flags_it_is_not_averaged_away():
    # lip-sync flags the mouth, audio (weighted more) hears a real voice: not authentic
    v = run({"audio": items([0.001], [(0, 4)]), "lipsync": items([0.95], [(0, 1)])})
    assert v.confidence < 0.4
    assert v.label is Label.INCONCLUSIVE
    assert "detectors-disagree" in [code for code, _ in v.reasons]


def test_too_short_media_is_inconclusive():
    short = MediaFacts(has_video=True, faces=1, has_audio=True, speech_s=0.5, duration_s=0.6)
    v = run({"audio": items([0.01], [(0, 0.6)])}, facts=short)
    assert v.label is Label.INCONCLUSIVE
    assert "too-short" in [code for code, _ in v.reasons]


def test_a_score_in_the_band_is_near_threshold():
    v = run({"audio": items([0.5], [(0, 4)])})
    assert v.label is Label.INCONCLUSIVE
    assert [code for code, _ in v.reasons][0] == "near-threshold"


def test_a_detector_scaled_to_zero_leaves_it_inconclusive():
    v = run({"audio": items([0.99], [(0, 4)])}, {**ALL, "audio": 0.0})
    assert v.label is Label.INCONCLUSIVE
    assert v.weights["audio"] == 0.0
    assert [code for code, _ in v.reasons][0] == "weak-detectors-only"


def test_an_uncalibrated_detector_is_reported_but_not_fused():
    found = {"audio": items([0.9], [(0, 4)]), "extra": None}
    cal_less = parse(
        {
            **CAL.document,
            "detectors": {"audio": CAL.document["detectors"]["audio"]},
            "fusion": {"weights": {"audio": 1.0}, "bias": 0.0},
        }
    )
    v = verdict(
        {"audio": found["audio"], "lipsync": items([0.9], [(0, 1)])}, cal_less, ALL, 0.5, 0.1, FACTS
    )
    assert v.scores["lipsync"] == pytest.approx(0.9) and v.calibrated["lipsync"] is None
    assert v.weights["lipsync"] == 0.0
    assert v.confidence == pytest.approx(0.9, abs=1e-4)


def test_scored_items_need_one_span_per_score():
    with pytest.raises(ValueError, match="2 scores but 1 spans"):
        items([0.1, 0.2], [(0, 1)])


def test_timeline_maps_items_to_their_seconds():
    frames = [(0, 0.0), (25, 1.0), (50, 2.0), (75, 3.0), (100, 4.0)]
    points = timeline(
        frames,
        {
            "visual": items([0.1, 0.3, 0.9], [(0, 1), (1, 2), (3, 4)]),  # no face at 2 s and 4 s
            "audio": items([0.8, 0.4], [(0, 4.04), (2, 6.04)]),
            "lipsync": items([0.6], [(1, 2)]),
        },
        CAL,
        ALL,
        1.0,
    )
    assert [p.frame for p in points] == [0, 25, 50, 75, 100]
    assert points[0].modalities == pytest.approx({"visual": 0.1, "audio": 0.8, "lipsync": None})
    assert points[0].score == pytest.approx(fused(audio=0.8), abs=1e-4)
    assert points[1].modalities == pytest.approx({"visual": 0.3, "audio": 0.8, "lipsync": 0.6})
    assert points[1].score == pytest.approx(fused(audio=0.8, lipsync=0.6), abs=1e-4)
    # two audio windows overlap second 2: their mean
    assert points[2].modalities == pytest.approx({"visual": None, "audio": 0.6, "lipsync": None})
    assert points[2].score == pytest.approx(0.6, abs=1e-4)
    assert points[4].modalities["audio"] == pytest.approx(0.6)  # 4.0-5.0 overlaps both


def test_timeline_point_without_a_weighted_item_has_no_score():
    points = timeline(
        [(0, 0.0), (25, 1.0)],
        {"visual": items([0.7], [(0, 1)]), "audio": items([0.3], [(0, 1)]), "lipsync": None},
        CAL,
        ALL,
        1.0,
    )
    assert points[0].score == pytest.approx(0.3, abs=1e-4)
    assert points[1].score is None  # visual alone there, weighted 0
    assert points[1].modalities == {"visual": None, "audio": None, "lipsync": None}


def test_timeline_at_two_fps_uses_half_second_intervals():
    frames = [(0, 0.0), (12, 0.5), (25, 1.0)]
    points = timeline(
        frames,
        {"visual": items([0.2, 0.4, 0.6], [(0, 0.5), (0.5, 1.0), (1.0, 1.5)])},
        CAL,
        ALL,
        0.5,
    )
    assert [p.modalities["visual"] for p in points] == pytest.approx([0.2, 0.4, 0.6])


def test_suspicious_order_prefers_visual_then_fused():
    pts = [
        SecondScore(0, 0.0, 0.5, {"visual": 0.2, "audio": 0.5, "lipsync": None}),
        SecondScore(25, 1.0, 0.6, {"visual": 0.9, "audio": 0.5, "lipsync": None}),
        SecondScore(50, 2.0, 0.7, {"visual": None, "audio": 0.7, "lipsync": None}),
        SecondScore(75, 3.0, 0.4, {"visual": 0.9, "audio": 0.1, "lipsync": None}),
    ]
    assert suspicious_order(pts) == [1, 3, 0, 2]


def test_the_visual_score_is_the_most_suspicious_face_track():
    # two faces over four seconds: track 0 real, track 1 swapped; a one-frame false
    # detection (track 2) scores higher still but is too short to decide
    spans = [(t, t + 1) for t in (0, 0, 1, 1, 2, 2, 3, 3, 2)]
    scores = [0.1, 0.9, 0.1, 0.8, 0.2, 0.9, 0.1, 0.7, 0.99]
    visual = ScoredItems(np.asarray(scores, np.float32), tuple(spans), (0, 1, 0, 1, 0, 1, 0, 1, 2))
    assert visual.most_suspicious_track() == 1
    v = run({"visual": visual})
    assert v.scores["visual"] == pytest.approx((0.9 + 0.8 + 0.9 + 0.7) / 4)
    points = timeline([(i * 25, float(i)) for i in range(4)], {"visual": visual}, CAL, ALL, 1.0)
    assert [p.modalities["visual"] for p in points] == pytest.approx([0.9, 0.8, 0.9, 0.7])
