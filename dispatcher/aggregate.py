"""From per-item scores to the verdict and the per-second timeline. Pure: no I/O.

Every item a detector scores covers a span of the video: a face crop the sampling
interval of its frame, an audio window its ~4 s, a lip-sync clip its second. A detector's
score is the mean of its items (for the face detectors, those of the most suspicious face
track); the fitted calibration (:mod:`dfd.calibration`) maps it to a probability, and the
fused probability is the calibration's logistic fusion over the detectors that looked.
A timeline point (one per sampled frame) does the same with the items overlapping its
interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dfd.calibration import Calibration
from dfd.detectors import DETECTORS, LooksAt, can_clear
from dfd.states import Label


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
    """``items`` with each face detector's items narrowed to its most suspicious face track:
    a video's face evidence is its most suspicious face, not an average over every face."""
    out = dict(items)
    for name, scored in items.items():
        if scored is None or scored.tracks is None:
            continue
        track = scored.most_suspicious_track()
        out[name] = scored.of_track(track) if track is not None else scored
    return out


@dataclass(frozen=True)
class SecondScore:
    """One timeline point: a sampled frame and the scores of the items around it."""

    frame: int
    time_s: float
    score: float | None
    modalities: dict[str, float | None]  # per modality, its primary detector's local score


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
    """The whole-media outcome, per enabled detector.

    Attributes:
        confidence: fused P(manipulated).
        label: see :func:`verdict`.
        reasons: ``(code, message)`` pairs that explain the label.
        scores: per detector, its raw score (None when unused).
        calibrated: per detector, its calibrated probability (None when unused or
            without a calibration).
        weights: per detector, its share of the fusion weight among those that looked
            (0 for the unused, the uncalibrated and those weighted 0).
        used: per detector, whether it had input.
        unused_reason: per unused detector, why (``no-face``, ``no-speech``, ...).
    """

    confidence: float
    label: Label
    reasons: tuple[tuple[str, str], ...]
    scores: dict[str, float | None]
    calibrated: dict[str, float | None]
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


def fusion_weights(
    detectors: Sequence[str], calibration: Calibration, scales: Mapping[str, float]
) -> dict[str, float]:
    """Per detector, its fitted fusion weight times its modality's scale (``DFD_WEIGHT_*``,
    a request's ``options.weights``); 0 for a detector without a calibration."""
    out = {}
    for name in detectors:
        d = DETECTORS[name]
        fitted = calibration.weights.get(name, 0.0) if name in calibration.calibrators else 0.0
        out[name] = fitted * float(scales.get(d.modality or "", 1.0))
    return out


def calibrated_scores(
    scores: Mapping[str, float | None], calibration: Calibration
) -> dict[str, float | None]:
    """Each raw score through its detector's calibration (None without one)."""
    return {
        n: (
            calibration.calibrated(n, s) if s is not None and n in calibration.calibrators else None
        )
        for n, s in scores.items()
    }


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
    """Why each unused detector had no input, from what it looks at."""
    picture = "no-video" if not facts.has_video else "no-face"
    voice = "no-audio" if not facts.has_audio else "no-speech"
    why = {
        LooksAt.FACE_TRACK: picture,
        LooksAt.FRAME: "no-video",
        LooksAt.SPEECH_WINDOW: voice,
        # lip-sync needs both a face and speech: name what was missing first
        LooksAt.FACE_AUDIO_CLIP: picture if not facts.faces else voice,
    }
    return {n: why[DETECTORS[n].looks_at] for n, u in used.items() if not u}


def _mean(scored: ScoredItems | None) -> float | None:
    if scored is None or np.size(scored.scores) == 0:
        return None
    return float(np.mean(np.asarray(scored.scores, dtype=np.float64)))


def verdict(
    items: Mapping[str, ScoredItems | None],
    calibration: Calibration,
    scales: Mapping[str, float],
    threshold: float,
    band: float,
    facts: MediaFacts,
) -> Verdict:
    """Fuse all items of the media into the verdict, and say why.

    ``items`` holds every enabled detector, ``None`` for one that had no input. A face
    detector's score is that of its most suspicious face track (:func:`by_track`). The
    label:

    - ``not_applicable``: no detector had input (no face and no speech);
    - ``inconclusive`` (``weak-detectors-only``): detectors looked, but none of them has
      a fusion weight (uncalibrated, fitted to 0 or scaled to 0);
    - ``manipulated``: fused probability above ``threshold + band``;
    - ``authentic``: below ``threshold - band``, and a detector able to clear the media
      (``dfd.detectors``: ``can_clear``) looked; otherwise ``inconclusive`` (``weak-detectors-only``);
    - ``inconclusive`` also for a probability in the band, detectors that disagree (one
      calibrated above ``threshold + band`` while the fusion is not), media shorter than
      :data:`MIN_DURATION_S`.
    """
    names = list(items)
    narrowed = by_track(items)
    scores = {n: _mean(narrowed[n]) for n in names}
    used = {n: scores[n] is not None for n in names}
    calibrated = calibrated_scores(scores, calibration)
    weights = fusion_weights(names, calibration, scales)
    looked = [n for n in names if used[n] and calibrated[n] is not None and weights[n] > 0]
    total = sum(weights[n] for n in looked)
    shares = {n: (weights[n] / total if n in looked else 0.0) for n in names}
    confidence = float(
        np.clip(calibration.fused({n: calibrated[n] for n in looked}, weights), 0.0, 1.0)
    )
    unused = unused_reasons(facts, used)
    reasons: list[tuple[str, str]] = []

    def done(label: Label) -> Verdict:
        for code in dict.fromkeys(unused.values()):
            reasons.append((code, _UNUSED_MESSAGES[code]))
        return Verdict(confidence, label, tuple(reasons), scores, calibrated, shares, used, unused)

    if not any(used.values()):
        return done(Label.NOT_APPLICABLE)
    if not looked:
        seen = ", ".join(n for n in names if used[n])
        reasons.append(
            (
                "weak-detectors-only",
                f"only {seen} looked, and none of them is weighted in the verdict (too weak "
                "on the calibration data, or switched off): nothing to judge by",
            )
        )
        return done(Label.INCONCLUSIVE)

    label = label_for(confidence, threshold, band)
    high = [n for n in looked if (calibrated[n] or 0.0) > threshold + band]
    if label is Label.MANIPULATED:
        reasons.append(
            (
                "score-above-threshold",
                f"the combined probability {confidence:.2f} is above {threshold + band:.2f}"
                + (f" ({', '.join(high)} flagged it)" if high else ""),
            )
        )
    elif label is Label.AUTHENTIC:
        reasons.append(
            (
                "score-below-threshold",
                f"the combined probability {confidence:.2f} is below {threshold - band:.2f}",
            )
        )
    else:
        reasons.append(
            (
                "near-threshold",
                f"the combined probability {confidence:.2f} is between "
                f"{threshold - band:.2f} and {threshold + band:.2f}: too close to call",
            )
        )
    if label is not Label.MANIPULATED and high:
        # A detector flagged it, the combined probability did not: a manipulation of one
        # modality (a swapped voice, a swapped face) must not be averaged away into
        # "authentic" by detectors that look at something else.
        reasons.append(
            (
                "detectors-disagree",
                f"{', '.join(high)} flagged it while the combined probability "
                f"{confidence:.2f} did not",
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
    if label is Label.AUTHENTIC and not any(can_clear(n) for n in looked):
        who = ", ".join(looked)
        reasons.append(
            (
                "weak-detectors-only",
                f"only {who} looked, and {'it is' if len(looked) == 1 else 'they are'} too "
                "weak to clear media: a low score from them is not evidence of authenticity",
            )
        )
        label = Label.INCONCLUSIVE
    return done(label)


def primary(modality: str, names: Sequence[str]) -> str | None:
    """The detector that speaks for ``modality`` in summaries: the one named after it,
    else its first enabled one."""
    if modality in names:
        return modality
    return next((n for n in names if DETECTORS[n].modality == modality), None)


def timeline(
    frames: Sequence[tuple[int, float]],
    items: Mapping[str, ScoredItems | None],
    calibration: Calibration,
    scales: Mapping[str, float],
    interval_s: float,
) -> list[SecondScore]:
    """One point per sampled frame with the fused and per-modality scores of its interval.

    Args:
        frames: ``(frame index, time_s)`` of each sampled frame, in time order.
        items: per enabled detector the scored items with their spans (None: unused).
        calibration, scales: as for :func:`verdict`.
        interval_s: the sampling interval (``1 / sample_fps``); a point stands for
            ``[time_s, time_s + interval_s)``.

    Returns:
        One :class:`SecondScore` per frame. A modality with no item of its primary
        detector in the interval is None there; a point where no weighted detector has
        an item has score None.
    """
    names = list(items)
    narrowed = by_track(items)  # the face lines follow the most suspicious face
    weights = fusion_weights(names, calibration, scales)
    modalities = ("visual", "audio", "lipsync")
    points: list[SecondScore] = []
    for frame, t in frames:
        lo, hi = t, t + interval_s
        local: dict[str, float | None] = {}
        for name in names:
            scored = narrowed.get(name)
            if scored is None:
                local[name] = None
                continue
            hit = [i for i, (a, b) in enumerate(scored.spans) if a < hi and b > lo]
            flat = np.asarray(scored.scores, dtype=np.float64).reshape(-1)
            local[name] = float(flat[hit].mean()) if hit else None
        cal = calibrated_scores(local, calibration)
        weighted = {n: p for n, p in cal.items() if p is not None and weights[n] > 0}
        mods = {m: (local[p] if (p := primary(m, names)) else None) for m in modalities}
        score = calibration.fused(weighted, weights) if weighted else None
        points.append(SecondScore(frame, t, score, mods))
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
