"""Detection metrics on scores and labels: AUC, EER, TPR at a fixed FPR, calibration error.

Pure numpy, shared by the scorecard (``benchmarks.bench_detection``) and the calibration fit
(``export.calibrate``). ``labels`` are 1 for a manipulated item and 0 for a real one; a
higher score means "more likely manipulated". A metric that needs both classes returns
``None`` when one is missing, rather than a number that means nothing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _arrays(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"metrics: expected two equal 1-D sequences, got {s.shape} and {y.shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("metrics: labels must be 0 (real) or 1 (manipulated)")
    return s, y


def _both_classes(y: FloatArray) -> bool:
    return bool(0 < y.sum() < len(y))


def auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float | None:
    """Area under the ROC curve: P(score of a fake > score of a real), ties counted half."""
    s, y = _arrays(scores, labels)
    if not _both_classes(y):
        return None
    pos, neg = s[y == 1], s[y == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def roc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """``(fpr, tpr)`` at every distinct threshold, from (0, 0) to (1, 1).

    The item is called manipulated when its score is >= the threshold.
    """
    s, y = _arrays(scores, labels)
    if not _both_classes(y):
        raise ValueError("roc: needs at least one real and one manipulated item")
    thresholds = np.unique(s)[::-1]
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    tpr = np.array([0.0] + [((s >= t) & (y == 1)).sum() / n_pos for t in thresholds])
    fpr = np.array([0.0] + [((s >= t) & (y == 0)).sum() / n_neg for t in thresholds])
    return fpr, tpr


def eer(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float | None:
    """Equal error rate: where the false-positive and false-negative rates cross.

    Linear interpolation between the two ROC points that bracket the crossing.
    """
    s, y = _arrays(scores, labels)
    if not _both_classes(y):
        return None
    fpr, tpr = roc(s, y)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # decreasing from 1 to -1 along the curve
    i = int(np.argmax(diff <= 0))
    if diff[i] == 0 or i == 0:
        return float(fpr[i])
    # The crossing lies on the segment (i-1, i).
    d0, d1 = diff[i - 1], diff[i]
    t = d0 / (d0 - d1)
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def tpr_at_fpr(scores: npt.ArrayLike, labels: npt.ArrayLike, max_fpr: float = 0.05) -> float | None:
    """The highest true-positive rate of a threshold whose false-positive rate is <= ``max_fpr``."""
    s, y = _arrays(scores, labels)
    if not _both_classes(y):
        return None
    fpr, tpr = roc(s, y)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def ece(probabilities: npt.ArrayLike, labels: npt.ArrayLike, bins: int = 10) -> float | None:
    """Expected calibration error: the mean |observed rate - mean probability| over equal-width
    bins of the probability, weighted by how many items fall in each bin."""
    p, y = _arrays(probabilities, labels)
    if len(p) == 0:
        return None
    if ((p < 0) | (p > 1)).any():
        raise ValueError("ece: probabilities must lie in [0, 1]")
    index = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            total += in_bin.sum() * abs(y[in_bin].mean() - p[in_bin].mean())
    return float(total / len(p))
