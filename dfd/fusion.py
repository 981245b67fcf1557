"""The fusion rule: per-modality item scores, a mask and weights in, one confidence out.

A modality's score is the mean of its item scores (P(manipulated) per face crop, audio
window or lip-sync clip). The confidence is the weighted mean of the scores of the
modalities that have items, the weights renormalised over those. When no modality is
available (or every available weight is zero) the confidence is 0.5: no evidence either
way, which the label rule turns into ``inconclusive``.

This is the one place the fused score is computed in the service
(``dispatcher.aggregate`` calls it over all of a video's items and per second for the
timeline); the ensemble's ``fusion`` step (``ensemble_config.fusion``) computes the same
rule in the graph for callers of Triton, and a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dfd.states import MODALITY_ORDER

NO_SIGNAL_CONFIDENCE = 0.5


def fuse(
    item_scores: Mapping[str, np.ndarray | None],
    weights: Sequence[float] | Mapping[str, float],
) -> tuple[np.ndarray, float]:
    """Fuse per-item scores into per-modality scores and one confidence.

    Args:
        item_scores: modality name (``visual``, ``audio``, ``lipsync``) -> item scores
            (any shape, flattened); ``None``, an empty array or a missing key marks the
            modality unavailable.
        weights: three non-negative weights in ``MODALITY_ORDER`` or a name -> weight map.

    Returns:
        ``(modality_scores, confidence)``: modality_scores has three float32 entries in
        ``MODALITY_ORDER``, NaN for an unavailable modality; confidence is in [0, 1],
        0.5 when nothing is available.
    """
    names = [m.value for m in MODALITY_ORDER]
    if isinstance(weights, Mapping):
        w = np.array([float(weights.get(n, 0.0)) for n in names], dtype=np.float64)
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != (len(names),):
            raise ValueError(f"fusion: expected {len(names)} weights {names}, got shape {w.shape}")
    if np.any(w < 0):
        raise ValueError(f"fusion: weights must be non-negative, got {w.tolist()}")
    scores = np.full(len(names), np.nan, dtype=np.float64)
    for i, name in enumerate(names):
        items = item_scores.get(name)
        if items is not None and np.size(items) > 0:
            scores[i] = float(np.mean(np.asarray(items, dtype=np.float64)))
    used = ~np.isnan(scores)
    total = float(np.sum(w[used]))
    confidence = (
        float(np.sum(w[used] * scores[used]) / total) if total > 0 else NO_SIGNAL_CONFIDENCE
    )
    return scores.astype(np.float32), confidence
