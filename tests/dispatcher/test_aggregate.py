"""Verdict, label and per-second timeline from per-item scores."""

from __future__ import annotations

import numpy as np
import pytest

from dfd.states import Label
from dispatcher.aggregate import (
    ScoredItems,
    SecondScore,
    label_for,
    renormalised_weights,
    suspicious_order,
    timeline,
    verdict,
)

pytestmark = pytest.mark.unit

W = (0.3, 0.5, 0.2)


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


def test_verdict_weighted_mean_of_modality_means():
    v = verdict(
        {
            "visual": items([0.2, 0.4], [(0, 1), (1, 2)]),
            "audio": items([0.9], [(0, 4)]),
            "lipsync": items([0.5, 0.7], [(0, 1), (1, 2)]),
        },
        W,
        0.5,
        0.1,
    )
    assert v.scores == pytest.approx({"visual": 0.3, "audio": 0.9, "lipsync": 0.6})
    assert v.confidence == pytest.approx(0.3 * 0.3 + 0.5 * 0.9 + 0.2 * 0.6)
    assert v.label is Label.MANIPULATED
    assert v.used == {"visual": True, "audio": True, "lipsync": True}
    assert v.weights == pytest.approx({"visual": 0.3, "audio": 0.5, "lipsync": 0.2})


def test_verdict_renormalises_over_used_modalities():
    v = verdict(
        {"visual": None, "audio": items([0.1, 0.3], [(0, 4), (2, 6)]), "lipsync": None}, W, 0.5, 0.1
    )
    assert v.used == {"visual": False, "audio": True, "lipsync": False}
    assert v.weights == {"visual": 0.0, "audio": 1.0, "lipsync": 0.0}
    assert v.scores["visual"] is None and v.scores["lipsync"] is None
    assert v.confidence == pytest.approx(0.2)
    assert v.label is Label.AUTHENTIC


def test_verdict_with_nothing_used_is_inconclusive():
    v = verdict({"visual": None, "audio": None, "lipsync": None}, W, 0.5, 0.1)
    assert v.label is Label.INCONCLUSIVE
    assert v.confidence == 0.5
    assert not any(v.used.values())


def test_verdict_with_only_zero_weighted_modality_is_inconclusive():
    v = verdict(
        {"visual": items([0.99], [(0, 1)]), "audio": None, "lipsync": None},
        (0.0, 0.5, 0.2),
        0.5,
        0.1,
    )
    assert v.label is Label.INCONCLUSIVE


def test_renormalised_weights():
    assert renormalised_weights(
        W, {"visual": True, "audio": False, "lipsync": True}
    ) == pytest.approx({"visual": 0.6, "audio": 0.0, "lipsync": 0.4})


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
        W,
        1.0,
    )
    assert [p.frame for p in points] == [0, 25, 50, 75, 100]
    assert points[0].modalities == pytest.approx({"visual": 0.1, "audio": 0.8, "lipsync": None})
    assert points[0].score == pytest.approx((0.3 * 0.1 + 0.5 * 0.8) / 0.8)
    assert points[1].modalities == pytest.approx({"visual": 0.3, "audio": 0.8, "lipsync": 0.6})
    assert points[1].score == pytest.approx(0.3 * 0.3 + 0.5 * 0.8 + 0.2 * 0.6)
    # two audio windows overlap second 2: their mean
    assert points[2].modalities == pytest.approx({"visual": None, "audio": 0.6, "lipsync": None})
    assert points[2].score == pytest.approx(0.6)
    assert points[4].modalities["audio"] == pytest.approx(
        0.6
    )  # 4.0-5.0 overlaps both (first ends 4.04)


def test_timeline_point_without_items_has_no_score():
    points = timeline(
        [(0, 0.0), (25, 1.0)],
        {"visual": items([0.7], [(0, 1)]), "audio": None, "lipsync": None},
        W,
        1.0,
    )
    assert points[0].score == pytest.approx(0.7)
    assert points[1].score is None
    assert points[1].modalities == {"visual": None, "audio": None, "lipsync": None}


def test_timeline_at_two_fps_uses_half_second_intervals():
    frames = [(0, 0.0), (12, 0.5), (25, 1.0)]
    points = timeline(
        frames, {"visual": items([0.2, 0.4, 0.6], [(0, 0.5), (0.5, 1.0), (1.0, 1.5)])}, W, 0.5
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
