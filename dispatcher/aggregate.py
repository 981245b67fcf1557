"""From per-item scores to the verdict and the per-second timeline. Pure: no I/O.

Every item the ensemble scores covers a span of the video: a face crop the sampling
interval of its frame, an audio window its ~4 s, a lip-sync clip its second. A timeline
point (one per sampled frame) takes, per modality, the mean of the items overlapping its
interval, and fuses them with :func:`dfd.fusion.fuse`, the same rule the
ensemble applies to the whole video.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dfd.fusion import fuse
from dfd.states import MODALITY_ORDER, Label


@dataclass(frozen=True)
class ScoredItems:
    """One modality's item scores and the time span each item covers.

    Attributes:
        scores: P(manipulated) per item, shape ``[K]``.
        spans: ``(start_s, end_s)`` per item, same order.
    """

    scores: np.ndarray
    spans: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.spans) != np.size(self.scores):
            raise ValueError(
                f"scored items: {np.size(self.scores)} scores but {len(self.spans)} spans"
            )


@dataclass(frozen=True)
class SecondScore:
    """One timeline point: a sampled frame and the scores of the items around it."""

    frame: int
    time_s: float
    score: float | None
    modalities: dict[str, float | None]


@dataclass(frozen=True)
class Verdict:
    """The whole-video outcome.

    Attributes:
        confidence: fused P(manipulated).
        label: from confidence, threshold and the inconclusive band.
        scores: per modality mean item score (None when unused).
        weights: per modality weight after renormalisation over the used ones.
        used: per modality, whether it had input.
    """

    confidence: float
    label: Label
    scores: dict[str, float | None]
    weights: dict[str, float]
    used: dict[str, bool]


def renormalised_weights(weights: Sequence[float], used: Mapping[str, bool]) -> dict[str, float]:
    """Weights in ``MODALITY_ORDER`` with unused modalities at 0 and the rest summing to 1."""
    names = [m.value for m in MODALITY_ORDER]
    raw = {n: (float(w) if used.get(n) else 0.0) for n, w in zip(names, weights, strict=True)}
    total = sum(raw.values())
    return {n: (w / total if total > 0 else 0.0) for n, w in raw.items()}


def label_for(
    confidence: float, threshold: float, band: float, enough_signal: bool = True
) -> Label:
    """``manipulated`` above ``threshold + band``, ``authentic`` below ``threshold - band``.

    In between, or without enough signal to judge, ``inconclusive``.
    """
    if not enough_signal:
        return Label.INCONCLUSIVE
    if confidence > threshold + band:
        return Label.MANIPULATED
    if confidence < threshold - band:
        return Label.AUTHENTIC
    return Label.INCONCLUSIVE


def verdict(
    items: Mapping[str, ScoredItems | None],
    weights: Sequence[float],
    threshold: float,
    band: float,
) -> Verdict:
    """Fuse all items of the video into the verdict (what the ensemble does for one request).

    A modality with no items is unused; its weight goes to the others. No modality used,
    or every used modality weighted zero, is too little signal: ``inconclusive``.
    """
    names = [m.value for m in MODALITY_ORDER]
    arrays: dict[str, np.ndarray | None] = {}
    for n in names:
        mod = items.get(n)
        arrays[n] = mod.scores if mod is not None else None
    modality_scores, confidence = fuse(arrays, weights)
    used = {n: bool(a is not None and a.size > 0) for n, a in arrays.items()}
    renorm = renormalised_weights(weights, used)
    scores = {
        n: (float(s) if used[n] else None) for n, s in zip(names, modality_scores, strict=True)
    }
    enough = any(renorm[n] > 0 for n in names)
    return Verdict(
        confidence=float(np.clip(confidence, 0.0, 1.0)),
        label=label_for(confidence, threshold, band, enough),
        scores=scores,
        weights=renorm,
        used=used,
    )


def timeline(
    frames: Sequence[tuple[int, float]],
    items: Mapping[str, ScoredItems | None],
    weights: Sequence[float],
    interval_s: float,
) -> list[SecondScore]:
    """One point per sampled frame with the fused and per-modality scores of its interval.

    Args:
        frames: ``(frame index, time_s)`` of each sampled frame, in time order.
        items: per modality the scored items with their spans (None: unused).
        weights: fusion weights in ``MODALITY_ORDER``.
        interval_s: the sampling interval (``1 / sample_fps``); a point stands for
            ``[time_s, time_s + interval_s)``.

    Returns:
        One :class:`SecondScore` per frame. A modality with no item in the interval is
        None there; a point with no item at all has score None.
    """
    names = [m.value for m in MODALITY_ORDER]
    points: list[SecondScore] = []
    for frame, t in frames:
        lo, hi = t, t + interval_s
        local: dict[str, np.ndarray | None] = {}
        for name in names:
            mod = items.get(name)
            if mod is None:
                local[name] = None
                continue
            hit = [i for i, (a, b) in enumerate(mod.spans) if a < hi and b > lo]
            local[name] = np.asarray(mod.scores, dtype=np.float64).reshape(-1)[hit] if hit else None
        if all(v is None for v in local.values()):
            points.append(SecondScore(frame, t, None, dict.fromkeys(names)))
            continue
        per_mod, fused = fuse(local, weights)
        mods = {n: (None if np.isnan(s) else float(s)) for n, s in zip(names, per_mod, strict=True)}
        # fuse() answers 0.5 when every weight present is zero; that is no score.
        has_weight = any(mods[n] is not None and w > 0 for n, w in zip(names, weights, strict=True))
        points.append(SecondScore(frame, t, float(fused) if has_weight else None, mods))
    return points


def suspicious_order(points: Sequence[SecondScore], key: str = "visual") -> list[int]:
    """Indices of ``points`` from most to least suspicious by ``key``, then by fused score.

    Points with no score for ``key`` come last.
    """

    def rank(i: int) -> tuple[float, float]:
        p = points[i]
        own = p.modalities.get(key)
        return (-(own if own is not None else -1.0), -(p.score if p.score is not None else -1.0))

    return sorted(range(len(points)), key=rank)
