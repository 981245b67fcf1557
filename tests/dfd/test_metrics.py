"""dfd.metrics on small cases worked out by hand."""

from __future__ import annotations

import pytest

from dfd import metrics

# The classic four-item example: one real (0.4) outscores one fake (0.35).
S = [0.1, 0.4, 0.35, 0.8]
Y = [0, 0, 1, 1]


def test_auc_counts_pairs_and_half_ties() -> None:
    assert metrics.auc(S, Y) == pytest.approx(0.75)
    assert metrics.auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert metrics.auc([0.2, 0.9], [0, 1]) == 1.0
    assert metrics.auc([0.9, 0.2], [0, 1]) == 0.0


def test_roc_runs_from_origin_to_one() -> None:
    fpr, tpr = metrics.roc(S, Y)
    assert list(fpr) == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert list(tpr) == [0.0, 0.5, 0.5, 1.0, 1.0]


def test_eer() -> None:
    assert metrics.eer(S, Y) == pytest.approx(0.5)
    assert metrics.eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    assert metrics.eer([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 1.0
    # 3 reals, 3 fakes, one real above one fake: FPR = FNR = 1/3 at threshold 0.6.
    assert metrics.eer([0.1, 0.2, 0.7, 0.6, 0.8, 0.9], [0, 0, 0, 1, 1, 1]) == pytest.approx(1 / 3)


def test_eer_interpolates_between_roc_points() -> None:
    # 4 reals (.1-.4), one fake at .35: the ROC goes (0,0) (.25,0) (.25,1) ...; FNR - FPR
    # falls from .75 to -.25 along the vertical segment at FPR .25, so EER = .25.
    assert metrics.eer([0.1, 0.2, 0.3, 0.4, 0.35], [0, 0, 0, 0, 1]) == pytest.approx(0.25)
    # 1 real at .5 between 2 fakes (.4, .6): (0,0) (0,.5) (1,.5) (1,1); FNR - FPR = .5 at
    # (0,.5) and -.5 at (1,.5): the crossing is halfway along the horizontal segment.
    assert metrics.eer([0.5, 0.4, 0.6], [0, 1, 1]) == pytest.approx(0.5)


def test_tpr_at_fpr() -> None:
    assert metrics.tpr_at_fpr(S, Y, 0.05) == pytest.approx(0.5)
    assert metrics.tpr_at_fpr(S, Y, 0.5) == pytest.approx(1.0)
    assert metrics.tpr_at_fpr([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.05) == 0.0


def test_ece() -> None:
    # Bin 9: observed .5 vs .9 (2 items); bin 1: observed 0 vs .1 (2 items).
    assert metrics.ece([0.9, 0.9, 0.1, 0.1], [1, 0, 0, 0]) == pytest.approx(0.25)
    assert metrics.ece([1.0, 0.0], [1, 0]) == 0.0  # 1.0 falls in the top bin
    assert metrics.ece([], []) is None


def test_one_class_gives_none_not_a_number() -> None:
    for fn in (metrics.auc, metrics.eer, metrics.tpr_at_fpr):
        assert fn([0.1, 0.9], [1, 1]) is None
        assert fn([], []) is None
    assert metrics.ece([0.1, 0.9], [1, 1]) == pytest.approx(0.5)


def test_bad_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="equal"):
        metrics.auc([0.1, 0.2], [0])
    with pytest.raises(ValueError, match="labels"):
        metrics.auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="probabilities"):
        metrics.ece([1.5], [1])
