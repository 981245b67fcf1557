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

from dfd.detectors import can_clear
from dfd.fusion import fuse
from dfd.states import MODALITY_ORDER, Label


@dataclass(frozen=True)
class ScoredItems:
    """One modality's item scores and the time span each item covers.

    Attributes:
        scores: P(manipulated) per item, shape ``[K]``.
        spans: ``(start_s, end_s)`` per item, same order.
        tracks: for face crops, the face track of each item (None: one source).
    """

    scores: np.ndarray
    spans: tuple[tuple[float, float], ...]
    tracks: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.spans) != np.size(self.scores):
            raise ValueError(
                f"scored items: {np.size(self.scores)} scores but {len(self.spans)} spans"
            )
        if self.tracks is not None and len(self.tracks) != len(self.spans):
            raise ValueError(
                f"scored items: {len(self.spans)} items but {len(self.tracks)} track ids"
            )

    def track_scores(self) -> dict[int, tuple[float, int]]:
        """Per track, ``(mean score, crops)``."""
        flat = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        tracks = self.tracks if self.tracks is not None else (0,) * len(flat)
        out: dict[int, tuple[float, int]] = {}
        for track in dict.fromkeys(tracks):
            picked = flat[[i for i, t in enumerate(tracks) if t == track]]
            out[track] = (float(picked.mean()), int(picked.size))
        return out

    def most_suspicious_track(self) -> int | None:
        """The track with the highest mean score among those seen in at least
        :data:`MIN_TRACK_CROPS` frames (all tracks when none is that long)."""
        per = self.track_scores()
        if not per:
            return None
        long = {t: v for t, v in per.items() if v[1] >= MIN_TRACK_CROPS} or per
        return max(long, key=lambda t: (long[t][0], long[t][1]))

    def of_track(self, track: int) -> ScoredItems:
        """Only the items of one track."""
        if self.tracks is None:
            return self
        keep = [i for i, t in enumerate(self.tracks) if t == track]
        return ScoredItems(
            np.asarray(self.scores).reshape(-1)[keep],
            tuple(self.spans[i] for i in keep),
            tuple(self.tracks[i] for i in keep),
        )


# A face seen in fewer sampled frames may be a false detection: it decides the visual score
# only when no face was seen longer.
MIN_TRACK_CROPS = 2


def by_track(items: Mapping[str, ScoredItems | None]) -> dict[str, ScoredItems | None]:
    """``items`` with the visual items narrowed to the most suspicious face track: a video's
    visual evidence is its most suspicious face, not an average over every face in it."""
    visual = items.get("visual")
    if visual is None or visual.tracks is None:
        return dict(items)
    track = visual.most_suspicious_track()
    return {**items, "visual": visual.of_track(track) if track is not None else visual}


@dataclass(frozen=True)
class SecondScore:
    """One timeline point: a sampled frame and the scores of the items around it."""

    frame: int
    time_s: float
    score: float | None
    modalities: dict[str, float | None]


@dataclass(frozen=True)
class MediaFacts:
    """What the media held, as the verdict needs to know it.

    Attributes:
        has_video: frames were decoded (an audio file has none).
        faces: face crops found.
        has_audio: there is an audio track.
        speech_s: seconds of speech the voice-activity detector found.
        duration_s: the media's duration.
    """

    has_video: bool
    faces: int
    has_audio: bool
    speech_s: float
    duration_s: float


@dataclass(frozen=True)
class Verdict:
    """The whole-video outcome.

    Attributes:
        confidence: fused P(manipulated).
        label: see :func:`verdict`.
        reasons: ``(code, message)`` pairs that explain the label.
        scores: per modality mean item score (None when unused).
        weights: per modality weight after renormalisation over the used ones.
        used: per modality, whether it had input.
        unused_reason: per unused modality, why (``no-face``, ``no-speech``, ...).
    """

    confidence: float
    label: Label
    reasons: tuple[tuple[str, str], ...]
    scores: dict[str, float | None]
    weights: dict[str, float]
    used: dict[str, bool]
    unused_reason: dict[str, str]


# Shorter media gives the detectors too little to judge (under one audio window).
MIN_DURATION_S = 1.0

_UNUSED_MESSAGES = {
    "no-video": "there is no picture (an audio file): the face detectors had nothing to look at",
    "no-face": "no face was found: the face detectors had nothing to look at",
    "no-audio": "there is no audio track: the voice detectors had nothing to listen to",
    "no-speech": "the audio holds no speech (silence, music, tones or noise): the voice "
    "detectors judge only speech",
}


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


def unused_reasons(facts: MediaFacts, used: Mapping[str, bool]) -> dict[str, str]:
    """Why each unused modality had no input."""
    picture = "no-video" if not facts.has_video else "no-face"
    voice = "no-audio" if not facts.has_audio else "no-speech"
    why = {"visual": picture, "audio": voice}
    # lip-sync needs both a face and speech: name what was missing first
    why["lipsync"] = picture if not facts.faces else voice
    return {n: why[n] for n, u in used.items() if not u and n in why}


def verdict(
    items: Mapping[str, ScoredItems | None],
    weights: Sequence[float],
    threshold: float,
    band: float,
    facts: MediaFacts,
) -> Verdict:
    """Fuse all items of the media into the verdict, and say why.

    The visual score is that of the most suspicious face track (:func:`by_track`).

    A modality with no items is unused (with the reason); its weight goes to the others.
    The label:

    - ``not_applicable``: no modality had input (no face and no speech);
    - ``manipulated``: fused score above ``threshold + band``;
    - ``authentic``: below ``threshold - band``, and a detector able to clear the media
      (``dfd.detectors``: ``can_clear``) looked; otherwise ``inconclusive`` (``weak-detectors-only``);
    - ``inconclusive`` also for a score in the band, detectors that disagree, media
      shorter than :data:`MIN_DURATION_S`.
    """
    names = [m.value for m in MODALITY_ORDER]
    items = by_track(items)
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
    unused = unused_reasons(facts, used)
    confidence = float(np.clip(confidence, 0.0, 1.0))
    reasons: list[tuple[str, str]] = []
    weighted = [n for n in names if renorm[n] > 0]
    if not weighted:
        for code in dict.fromkeys(unused.values()):
            reasons.append((code, _UNUSED_MESSAGES[code]))
        if not reasons:  # inputs, but every weight zero
            reasons.append(("weak-detectors-only", "every detector that had input is weighted 0"))
        return Verdict(
            confidence, Label.NOT_APPLICABLE, tuple(reasons), scores, renorm, used, unused
        )

    label = label_for(confidence, threshold, band)
    high = [n for n in weighted if (scores[n] or 0.0) > threshold + band]
    if label is Label.MANIPULATED:
        reasons.append(
            (
                "score-above-threshold",
                f"the combined score {confidence:.2f} is above {threshold + band:.2f}"
                + (f" ({', '.join(high)} flagged it)" if high else ""),
            )
        )
    elif label is Label.AUTHENTIC:
        reasons.append(
            (
                "score-below-threshold",
                f"the combined score {confidence:.2f} is below {threshold - band:.2f}",
            )
        )
    else:
        reasons.append(
            (
                "near-threshold",
                f"the combined score {confidence:.2f} is between {threshold - band:.2f} and "
                f"{threshold + band:.2f}: too close to call",
            )
        )
    if label is not Label.MANIPULATED and high:
        # A detector flagged it, the combined score did not: a manipulation of one
        # modality (a swapped voice, a swapped face) must not be averaged away into
        # "authentic" by detectors that look at something else.
        reasons.append(
            (
                "detectors-disagree",
                f"{', '.join(high)} flagged it while the combined score {confidence:.2f} did not",
            )
        )
        label = Label.INCONCLUSIVE
    if facts.duration_s < MIN_DURATION_S:
        reasons.append(
            (
                "too-short",
                f"{facts.duration_s:.1f} s is too short to judge (at least {MIN_DURATION_S:g} s)",
            )
        )
        label = Label.INCONCLUSIVE
    if label is Label.AUTHENTIC and not any(can_clear(n) for n in weighted):
        looked = ", ".join(weighted)
        reasons.append(
            (
                "weak-detectors-only",
                f"only {looked} looked, and {'it is' if len(weighted) == 1 else 'they are'} too "
                "weak to clear media: a low score from them is not evidence of authenticity",
            )
        )
        label = Label.INCONCLUSIVE
    for code in dict.fromkeys(unused.values()):
        reasons.append((code, _UNUSED_MESSAGES[code]))
    return Verdict(confidence, label, tuple(reasons), scores, renorm, used, unused)


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
    items = by_track(items)  # the visual line follows the most suspicious face
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
