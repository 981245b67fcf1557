"""Mouth sync: does the mouth open and close with the voice? Per face track.

For each one-second lip-sync segment the decoder cuts (25 grey frames at 25 fps, the same
segments Light-ASD's clips come from, kept only where they hold speech), the face found on
its first sampled frame is cropped as MediaPipe's face-landmark ROI (the box made square
and enlarged 1.5x) on every frame and sent to the face mesh (``face_mesh``, 468
landmarks). The mouth opening of a frame is the mean distance of three inner-lip pairs
divided by the distance of the outer eye corners (so it does not change with the face's
size on screen). Against it stands the voice's log energy in the same 40 ms frames.

Both signals are first detrended: a centred moving average over :data:`DETREND_FRAMES`
(0.36 s) is subtracted, which removes the slow speech-versus-silence envelope every
spoken clip shares (a dub of another sentence starts and stops talking at much the same
times) and keeps the syllable-rate motion, which only the true voice matches. A track's
clips are then pooled: at each lag from ``-MAX_LAG_FRAMES`` to ``+MAX_LAG_FRAMES`` (audio
later than the picture is positive) one Pearson correlation is taken over all of the
track's frames. The score reads the best correlation within ``+-SCORE_LAG_FRAMES`` (one
frame: a capture's sub-frame offset); the lag reported is the peak of the whole curve.

Why these choices, measured on the 11 GRID clips against 22 dubs (each picture with two
other clips' sound), whole clips decoded at 25 fps: raw signals gave AUC 0.76 at lag 0,
detrended 0.93; taking the best of every lag within +-0.32 s let dubs find a chance
match (0.71), within +-40 ms 0.90. In-sample: the choices were made on those pairs. As
served, over the segments: GRID AUC 0.94, but the wild lip-sync and talking-head fakes
are more in sync than the wild reals (AUC 0.29, 0.36): ``benchmarks/results/mouth_sync.md``.
Voice-activity onsets (rises of silero-vad's P(speech) against rises of the mouth
opening) are reported as a second view, not scored.

:func:`lag_correlations`, :func:`mouth_opening`, :func:`energy_envelope` and
:func:`track_sync` are pure; :func:`mouth_sync` is the stage (it reaches Triton through
the client); :func:`sync_chart` draws the evidence.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dfd.errors import InputError
from dfd.specs import AUDIO_RATE, LIPSYNC_FPS, LIPSYNC_FRAMES, MESH_POINTS, MESH_SIZE
from dispatcher.faces import FaceResult, clip_boxes
from dispatcher.media import DecodedMedia
from dispatcher.speech import FRAME_S, Speech
from dispatcher.store import EvidenceStore
from dispatcher.triton_client import InferClient

MESH_MODEL = "face_mesh"
MESH_ROI_SCALE = 1.5  # MediaPipe's face-landmark ROI: the detector's box enlarged 1.5x
# Inner-lip landmark pairs (upper, lower) of MediaPipe's mesh: centre and either side.
INNER_LIP_PAIRS = ((13, 14), (82, 87), (312, 317))
EYE_CORNERS = (33, 263)  # outer eye corners: the face's size
MIN_FACE_PROB = 0.5  # frames where the mesh sees no face are left out
# Audio-video offsets a genuine recording may have: broadcast tolerance is about +-0.1 s,
# and speech energy leads or trails the lips' opening by up to ~0.2 s; beyond +-0.32 s
# an offset is itself a fault.
MAX_LAG_FRAMES = 8
SCORE_LAG_FRAMES = 1  # the score's lags: a capture's sub-frame offset either way
DETREND_FRAMES = 9  # moving average removed from both signals (0.36 s)
ENERGY_FLOOR_DB = -60.0  # log energy below this is silence (dB re full scale)
SAMPLES_PER_FRAME = AUDIO_RATE // LIPSYNC_FPS  # 640 samples, 40 ms


@dataclass(frozen=True)
class MouthClip:
    """The mouth opening over one lip-sync segment of one face track."""

    track: int
    start_s: float
    opening: np.ndarray  # [LIPSYNC_FRAMES], NaN where the mesh saw no face


@dataclass(frozen=True)
class TrackSync:
    """How a track's mouth follows the voice.

    Attributes:
        track: the face track.
        frames: frames with a mouth measured.
        correlation: the best Pearson r of the detrended mouth opening and log energy
            within ``+-SCORE_LAG_FRAMES``.
        lag_s: the lag within ``+-MAX_LAG_FRAMES`` with the highest correlation (audio
            after picture > 0).
        zero_lag_correlation: r at lag 0.
        onset_correlation: r of mouth-opening rises and P(speech) rises, best within
            ``+-SCORE_LAG_FRAMES``.
        score: ``(1 - correlation) / 2``: 0 lips fully with the voice, 1 against it
            (uncalibrated; only its order means something).
        lags_s, correlations: the whole lag curve, for the chart.
    """

    track: int
    frames: int
    correlation: float
    lag_s: float
    zero_lag_correlation: float
    onset_correlation: float
    score: float
    lags_s: tuple[float, ...]
    correlations: tuple[float, ...]


# --- pure signal maths ---------------------------------------------------------------


def mesh_box(face_box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The face-landmark ROI: the box made square on its longer side, enlarged 1.5x."""
    x1, y1, x2, y2 = face_box
    half = max(x2 - x1, y2 - y1) * MESH_ROI_SCALE / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return (cx - half, cy - half, cx + half, cy + half)


def mesh_crop(grey: np.ndarray, face_box: tuple[float, float, float, float]) -> np.ndarray:
    """One ``[3, 192, 192]`` crop in [0, 1] for the face mesh (grey copied to RGB)."""
    out = Image.fromarray(grey).transform(
        (MESH_SIZE, MESH_SIZE),
        Image.Transform.EXTENT,
        mesh_box(face_box),
        resample=Image.Resampling.BILINEAR,
    )
    plane = np.asarray(out, dtype=np.float32) / 255.0
    return np.repeat(plane[None], 3, axis=0)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap over eye-corner distance, per row of ``[n, 1404]`` landmarks."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, MESH_POINTS, 3)[..., :2]
    gaps = [np.linalg.norm(pts[:, a] - pts[:, b], axis=1) for a, b in INNER_LIP_PAIRS]
    eyes = np.linalg.norm(pts[:, EYE_CORNERS[0]] - pts[:, EYE_CORNERS[1]], axis=1)
    return np.mean(gaps, axis=0) / np.maximum(eyes, 1e-6)


def energy_envelope(audio: np.ndarray, start_s: float, frames: int) -> np.ndarray:
    """Log RMS energy (dB, floored) of the 40 ms audio frames starting at ``start_s``,
    one per 25 fps video frame; frames outside the track are silence."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    first = int(round(start_s * AUDIO_RATE))
    out = np.full(frames, ENERGY_FLOOR_DB)
    for j in range(frames):
        a = first + j * SAMPLES_PER_FRAME
        chunk = audio[max(a, 0) : max(a + SAMPLES_PER_FRAME, 0)]
        if chunk.size:
            rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
            out[j] = max(20 * np.log10(rms + 1e-12), ENERGY_FLOOR_DB)
    return out


def activity(speech: Speech, start_s: float, frames: int) -> np.ndarray:
    """silero-vad's P(speech) at each 25 fps frame time from ``start_s``."""
    probs = np.asarray(speech.probs, dtype=np.float64).reshape(-1)
    if probs.size == 0:
        return np.zeros(frames)
    times = start_s + np.arange(frames) / LIPSYNC_FPS
    centres = (np.arange(probs.size) + 0.5) * FRAME_S
    return np.interp(times, centres, probs, left=0.0, right=0.0)


def detrend(x: np.ndarray, frames: int = DETREND_FRAMES) -> np.ndarray:
    """``x`` less its centred moving average over ``frames`` (NaNs skipped and kept)."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    half = frames // 2
    kernel = np.ones(frames)
    total = np.convolve(np.pad(np.where(ok, x, 0.0), half, mode="edge"), kernel, "valid")
    count = np.convolve(np.pad(ok.astype(np.float64), half, mode="edge"), kernel, "valid")
    return np.where(ok, x - total / np.maximum(count, 1.0), np.nan)


def rises(x: np.ndarray) -> np.ndarray:
    """The positive part of the first difference (0 at the first frame)."""
    d = np.diff(np.asarray(x, dtype=np.float64), prepend=x[0] if len(x) else 0.0)
    return np.where(np.isnan(d), np.nan, np.maximum(d, 0.0))


def lag_correlations(
    video: Sequence[np.ndarray], audio: Sequence[np.ndarray], max_lag: int
) -> np.ndarray:
    """Pooled Pearson r of ``video[i][t]`` with ``audio[i][t + max_lag + lag]``.

    Args:
        video: per clip, the video signal (NaN where unmeasured).
        audio: per clip, the audio signal from ``max_lag`` frames before the clip to
            ``max_lag`` after it (``len(video[i]) + 2 * max_lag``).
        max_lag: lags ``-max_lag .. max_lag`` frames.

    Returns:
        ``[2 * max_lag + 1]`` correlations (0 where a signal is flat).
    """
    if len(video) != len(audio):
        raise InputError(f"mouth sync: {len(video)} video clips against {len(audio)} audio")
    out = np.zeros(2 * max_lag + 1)
    for k, lag in enumerate(range(-max_lag, max_lag + 1)):
        vs, as_ = [], []
        for v, a in zip(video, audio, strict=True):
            v = np.asarray(v, dtype=np.float64)
            if len(a) != len(v) + 2 * max_lag:
                raise InputError(
                    f"mouth sync: audio of {len(a)} frames for {len(v)} video frames "
                    f"and lags +-{max_lag}"
                )
            seg = np.asarray(a, dtype=np.float64)[max_lag + lag : max_lag + lag + len(v)]
            ok = ~(np.isnan(v) | np.isnan(seg))
            if ok.sum() < 2:
                continue
            vs.append(v[ok] - v[ok].mean())
            as_.append(seg[ok] - seg[ok].mean())
        if not vs:
            continue
        x, y = np.concatenate(vs), np.concatenate(as_)
        den = float(np.sqrt((x * x).sum() * (y * y).sum()))
        out[k] = float((x * y).sum() / den) if den > 1e-12 else 0.0
    return out


def track_sync(
    clips: Sequence[MouthClip],
    audio: np.ndarray,
    speech: Speech,
    max_lag: int = MAX_LAG_FRAMES,
    score_lag: int = SCORE_LAG_FRAMES,
) -> list[TrackSync]:
    """Correlation and lag of mouth opening against the voice, per track."""
    by_track: dict[int, list[MouthClip]] = {}
    for clip in clips:
        by_track.setdefault(clip.track, []).append(clip)
    lags = np.arange(-max_lag, max_lag + 1)
    out = []
    for track, group in sorted(by_track.items()):
        video = [detrend(c.opening) for c in group]
        span = [(c.start_s - max_lag / LIPSYNC_FPS, len(c.opening) + 2 * max_lag) for c in group]
        energy = [detrend(energy_envelope(audio, s, n)) for s, n in span]
        curve = lag_correlations(video, energy, max_lag)
        best = int(np.argmax(curve))
        near = slice(max_lag - score_lag, max_lag + score_lag + 1)
        vad = [rises(activity(speech, s, n)) for s, n in span]
        onset = lag_correlations([rises(c.opening) for c in group], vad, max_lag)
        frames = int(sum(np.isfinite(v).sum() for v in video))
        r = float(curve[near].max())
        out.append(
            TrackSync(
                track=track,
                frames=frames,
                correlation=r,
                lag_s=float(lags[best] / LIPSYNC_FPS),
                zero_lag_correlation=float(curve[max_lag]),
                onset_correlation=float(onset[near].max()),
                score=(1.0 - r) / 2.0,
                lags_s=tuple(float(x) for x in lags / LIPSYNC_FPS),
                correlations=tuple(float(x) for x in curve),
            )
        )
    return out


# --- the stage -----------------------------------------------------------------------


def _nearest(media: DecodedMedia, t: float, tol_s: float) -> int | None:
    if not media.frames:
        return None
    i = min(range(len(media.frames)), key=lambda k: abs(media.frames[k].time_s - t))
    return i if abs(media.frames[i].time_s - t) <= tol_s else None


def mouth_clips(media: DecodedMedia, faces: FaceResult, client: InferClient) -> list[MouthClip]:
    """Mouth openings of the lip-sync segments that start on a frame with a face, each
    for the most confident face (as the lip-sync clips are cut) and its track."""
    clip_s = LIPSYNC_FRAMES / LIPSYNC_FPS
    tol_s = 0.5 / LIPSYNC_FPS + 1e-6
    track_of = {(c.frame_pos, id(c.face)): c.track for c in faces.crops}
    out = []
    for seg in media.segments:
        # silent segments too: a mouth still while the voice is still is part of the match
        start = _nearest(media, seg.start_s, tol_s)
        if start is None or not faces.detections[start]:
            continue
        face = faces.detections[start][0]
        nxt = _nearest(media, seg.start_s + clip_s, tol_s)
        end_box = (
            faces.detections[nxt][0].box if nxt is not None and faces.detections[nxt] else None
        )
        boxes = clip_boxes(face.box, end_box)
        crops = np.stack([mesh_crop(seg.grey[j], boxes[j]) for j in range(LIPSYNC_FRAMES)])
        got = client.infer(MESH_MODEL, {"image": crops}, ["landmarks", "face_prob"])
        opening = mouth_opening(got["landmarks"])
        opening[np.asarray(got["face_prob"]).reshape(-1) < MIN_FACE_PROB] = np.nan
        track = track_of.get((start, id(face)), -1)
        out.append(MouthClip(track=track, start_s=seg.start_s, opening=opening))
    return out


def mouth_sync(
    media: DecodedMedia, faces: FaceResult, speech: Speech, client: InferClient
) -> list[TrackSync]:
    """The mouth-sync finding of each face track that speaks (empty without speech)."""
    if media.audio is None or not speech.found:
        return []
    return track_sync(mouth_clips(media, faces, client), media.audio, speech)


# --- evidence ------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if ok.sum() < 2 or np.nanstd(x) < 1e-12:
        return np.zeros_like(x)
    return (x - np.nanmean(x)) / np.nanstd(x)


def sync_chart(
    clips: Sequence[MouthClip],
    audio: np.ndarray,
    sync: TrackSync,
    size: tuple[int, int] = (900, 260),
) -> bytes:
    """A PNG of one track: mouth opening (blue) and the voice's log energy shifted by the
    found lag (orange), each standardised, over the video's time, with r and the lag."""
    mine = sorted((c for c in clips if c.track == sync.track), key=lambda c: c.start_s)
    if not mine:
        raise InputError(f"mouth sync chart: no clips of track {sync.track}")
    w, h = size
    left, right, top, bottom = 40, 16, 30, 28
    pw, ph = w - left - right, h - top - bottom
    t0 = mine[0].start_s
    t1 = mine[-1].start_s + len(mine[-1].opening) / LIPSYNC_FPS
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(12)

    def xy(t: float, v: float) -> tuple[float, float]:
        return left + pw * (t - t0) / max(t1 - t0, 1e-9), top + ph * (0.5 - v / 6.0)

    draw.rectangle((left, top, left + pw, top + ph), outline=(120, 120, 120))
    draw.line((*xy(t0, 0), *xy(t1, 0)), fill=(225, 225, 225))
    for clip in mine:
        times = clip.start_s + np.arange(len(clip.opening)) / LIPSYNC_FPS
        energy = energy_envelope(audio, clip.start_s + sync.lag_s, len(clip.opening))
        for values, colour in ((_z(energy), (230, 120, 20)), (_z(clip.opening), (30, 90, 200))):
            run = [xy(t, float(np.clip(v, -3, 3))) for t, v in zip(times, values, strict=True)]
            run = [p for p, v in zip(run, values, strict=True) if np.isfinite(v)]
            if len(run) > 1:
                draw.line(run, fill=colour, width=2)
    step = max(1, int(np.ceil((t1 - t0) / 12)))
    for k in range(int(np.ceil(t0)), int(t1) + 1, step):
        draw.text((xy(k, 0)[0] - 4, top + ph + 6), f"{k}s", fill=(90, 90, 90), font=font)
    draw.text(
        (left, 8),
        f"track {sync.track}: mouth opening (blue) vs voice energy (orange, shifted by the lag)"
        f"   r = {sync.correlation:.2f} (lag 0 +-40 ms), peak at {sync.lag_s * 1000:+.0f} ms",
        fill=(40, 40, 40),
        font=font,
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# --- the detector's finding ----------------------------------------------------------


@dataclass(frozen=True)
class MouthFinding:
    """What the mouth-sync detector found in one video.

    Attributes:
        tracks: per speaking face track.
        charts: keys in the evidence store of each track's chart, in track order.
    """

    tracks: tuple[TrackSync, ...]
    charts: tuple[str, ...]

    @property
    def score(self) -> float | None:
        """The best-synced track's score: someone on screen speaks with the voice."""
        return min((t.score for t in self.tracks), default=None)

    @property
    def detail(self) -> str:
        """The finding in words, for the result."""
        if not self.tracks:
            return "no face with speech to compare"
        return "; ".join(
            f"track {t.track}: r {t.correlation:.2f} over {t.frames} frames, voice peaks "
            f"{t.lag_s * 1000:+.0f} ms from the lips"
            for t in self.tracks
        )


def find_mouth_sync(
    job_id: str,
    media: DecodedMedia,
    faces: FaceResult,
    speech: Speech,
    client: InferClient,
    store: EvidenceStore,
) -> MouthFinding:
    """Run the detector and store each track's chart (``mouth_sync_t<track>.png``)."""
    if media.audio is None or not speech.found:
        return MouthFinding((), ())
    clips = mouth_clips(media, faces, client)
    tracks = track_sync(clips, media.audio, speech)
    charts = tuple(
        store.put(
            job_id, f"mouth_sync_t{t.track}.png", sync_chart(clips, media.audio, t), "image/png"
        )
        for t in tracks
    )
    return MouthFinding(tuple(tracks), charts)
