"""Inference: the video's face crops, audio windows and lip-sync clips to ``deepfake_ensemble``.

One request carries every item of a short video; a long one is cut into requests of at
most ``settings.max_items_per_request`` items per modality, and the chunks' per-item scores
are concatenated. The video's fused score is computed from them once, by
``dispatcher.aggregate`` (:func:`dfd.fusion.fuse`, the rule the ensemble's fusion step
also computes for callers of Triton). Tensors are addressed by their names in
``dfd.ensemble``.

A modality without items (no face, no speech) is sent as one zero row with mask 0: the ensemble's composing models need at least one row, the fusion ignores it.
Retrying on ``UNAVAILABLE`` is the client's job; the deadline bounds all chunks together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dfd.ensemble import (
    AUDIO,
    AUDIO_SCORES,
    ENSEMBLE_NAME,
    ENSEMBLE_OUTPUTS,
    FACES,
    HEATMAPS,
    LIPSYNC_MFCC,
    LIPSYNC_SCORES,
    LIPSYNC_VIDEO,
    MASK,
    VISUAL_SCORES,
    WEIGHTS,
)
from dfd.ensemble import INPUTS as _IN
from dfd.ensemble import OUTPUTS as _OUT
from dfd.errors import UpstreamUnavailableError
from dfd.features import audio_windows
from dfd.settings import Settings
from dfd.specs import AUDIO_RATE, AUDIO_SAMPLES, LIPSYNC_FPS, LIPSYNC_FRAMES
from dfd.specs import spec as model_spec
from dfd.states import MODALITY_ORDER
from dispatcher.aggregate import ScoredItems
from dispatcher.faces import FaceResult
from dispatcher.media import DecodedMedia
from dispatcher.speech import MIN_WINDOW_SPEECH, Speech
from dispatcher.triton_client import InferClient


@dataclass(frozen=True)
class VideoItems:
    """Every item of one video, per modality, with the time span each covers."""

    faces: np.ndarray  # [Nv, 3, FACE_SIZE, FACE_SIZE]
    face_spans: tuple[tuple[float, float], ...]
    face_tracks: tuple[int, ...]
    audio: np.ndarray  # [Na, AUDIO_SAMPLES]
    audio_spans: tuple[tuple[float, float], ...]
    lipsync_video: np.ndarray  # [Nl, LIPSYNC_FRAMES, LIPSYNC_SIZE, LIPSYNC_SIZE]
    lipsync_mfcc: np.ndarray  # [Nl, LIPSYNC_FRAMES * MFCC_PER_FRAME, MFCC_COEFFS]
    lipsync_spans: tuple[tuple[float, float], ...]

    def count(self, modality: str) -> int:
        return {
            "visual": len(self.faces),
            "audio": len(self.audio),
            "lipsync": len(self.lipsync_video),
        }[modality]

    @property
    def mask(self) -> tuple[float, float, float]:
        return tuple(1.0 if self.count(m.value) else 0.0 for m in MODALITY_ORDER)  # type: ignore[return-value]


@dataclass(frozen=True)
class InferenceOutput:
    """The ensemble's answer for the whole video.

    Attributes:
        items: per modality the item scores with their spans (None: unused).
        heatmaps: ``[Nv, 8, 8]``, one per face crop.
        requests: how many ensemble requests were made.
    """

    items: dict[str, ScoredItems | None]
    heatmaps: np.ndarray
    requests: int


def _empty(name: str) -> np.ndarray:
    dims = _IN[name].dims
    return np.zeros((0, *dims[1:]), dtype=_IN[name].numpy_dtype)


def window_spans(n_samples: int, hop_s: float, count: int) -> tuple[tuple[float, float], ...]:
    """Time spans of the windows :func:`dfd.features.audio_windows` cuts."""
    if n_samples <= AUDIO_SAMPLES:
        return ((0.0, n_samples / AUDIO_RATE),)
    hop = max(1, int(round(hop_s * AUDIO_RATE)))
    last = n_samples - AUDIO_SAMPLES
    starts = list(range(0, last + 1, hop))
    if starts[-1] != last:
        starts.append(last)
    if len(starts) != count:
        raise ValueError(f"audio windows: expected {len(starts)} windows, got {count}")
    return tuple((s / AUDIO_RATE, (s + AUDIO_SAMPLES) / AUDIO_RATE) for s in starts)


def build_inputs(
    media: DecodedMedia, faces: FaceResult, speech: Speech, settings: Settings
) -> VideoItems:
    """Stack the video's items per modality; an unusable modality gets zero items.

    Audio windows and lip-sync clips are kept only where at least
    :data:`~dispatcher.speech.MIN_WINDOW_SPEECH` of their span is speech: the audio and
    lip-sync detectors judge speech, and their score on music, tones or silence means
    nothing.
    """
    interval = 1.0 / settings.sample_fps
    if faces.crops:
        face_arr = np.stack([c.pixels for c in faces.crops]).astype(np.float32, copy=False)
        t = [media.frames[c.frame_pos].time_s for c in faces.crops]
        face_spans = tuple((s, s + interval) for s in t)
        face_tracks = tuple(c.track for c in faces.crops)
    else:
        face_arr, face_spans, face_tracks = _empty(FACES), (), ()
    wins = _empty(AUDIO)
    audio_spans: tuple[tuple[float, float], ...] = ()
    if speech.found and media.audio is not None:
        every = audio_windows(media.audio, settings.audio_hop_s).astype(np.float32, copy=False)
        spans = window_spans(media.audio.size, settings.audio_hop_s, len(every))
        keep = [i for i, (a, b) in enumerate(spans) if speech.share(a, b) >= MIN_WINDOW_SPEECH]
        if keep:
            wins, audio_spans = every[keep], tuple(spans[i] for i in keep)
    clip_s = LIPSYNC_FRAMES / LIPSYNC_FPS
    clips = [
        c for c in faces.clips if speech.share(c.start_s, c.start_s + clip_s) >= MIN_WINDOW_SPEECH
    ]
    if clips:
        lip_v = np.stack([c.video for c in clips]).astype(np.float32, copy=False)
        lip_a = np.stack([c.mfcc for c in clips]).astype(np.float32, copy=False)
        lip_spans = tuple((c.start_s, c.start_s + clip_s) for c in clips)
    else:
        lip_v, lip_a, lip_spans = _empty(LIPSYNC_VIDEO), _empty(LIPSYNC_MFCC), ()
    return VideoItems(face_arr, face_spans, face_tracks, wins, audio_spans, lip_v, lip_a, lip_spans)


def max_items(settings: Settings) -> int:
    """Items per modality in one request: the setting, but never more than a composing
    model batches (the ensemble hands each modality's items to its model as one batch)."""
    served = min(
        model_spec(name).max_batch_size
        for name in (settings.visual_model, settings.audio_model, settings.lipsync_model)
    )
    return max(1, min(settings.max_items_per_request, served))


def chunk_requests(
    inputs: VideoItems, weights: tuple[float, float, float], max_items: int
) -> list[dict[str, np.ndarray]]:
    """The ensemble requests for ``inputs``: at most ``max_items`` rows per modality each.

    Every request carries all three modalities (a zero row and mask 0 where a chunk has
    none of a modality's items) and the same weights.
    """
    arrays = {
        FACES: inputs.faces,
        AUDIO: inputs.audio,
        LIPSYNC_VIDEO: inputs.lipsync_video,
        LIPSYNC_MFCC: inputs.lipsync_mfcc,
    }
    counts = [len(inputs.faces), len(inputs.audio), len(inputs.lipsync_video)]
    chunks = max(1, *(-(-n // max_items) for n in counts))
    w = np.asarray(weights, dtype=_IN[WEIGHTS].numpy_dtype)
    requests = []
    for c in range(chunks):
        lo, hi = c * max_items, (c + 1) * max_items
        req: dict[str, np.ndarray] = {}
        mask = []
        # In MODALITY_ORDER, the order of the fusion mask and weights.
        for names, n in (
            ((FACES,), counts[0]),
            ((AUDIO,), counts[1]),
            ((LIPSYNC_VIDEO, LIPSYNC_MFCC), counts[2]),
        ):
            present = lo < n
            mask.append(1.0 if present else 0.0)
            for name in names:
                part = (
                    arrays[name][lo:hi]
                    if present
                    else np.zeros((1, *_IN[name].dims[1:]), _IN[name].numpy_dtype)
                )
                req[name] = np.ascontiguousarray(part, dtype=_IN[name].numpy_dtype)
        req[MASK] = np.asarray(mask, dtype=_IN[MASK].numpy_dtype)
        req[WEIGHTS] = w
        requests.append(req)
    return requests


def run_ensemble(
    inputs: VideoItems,
    client: InferClient,
    settings: Settings,
    deadline_s: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> InferenceOutput:
    """Send the video's requests and combine their answers.

    Args:
        inputs: from :func:`build_inputs`.
        client: reaches Triton (retries on UNAVAILABLE itself).
        settings: fusion weights and the chunk size.
        deadline_s: seconds all requests together may take; past it the stage fails
            as transient (Triton overloaded), so the job is retried later.
        progress: called with 0..1 after each request.

    Raises:
        UpstreamUnavailableError: Triton unreachable, or the deadline passed.
    """
    weights = settings.fusion_weights()
    requests = chunk_requests(inputs, weights, max_items(settings))
    started = time.monotonic()
    parts: dict[str, list[np.ndarray]] = {
        VISUAL_SCORES: [],
        HEATMAPS: [],
        AUDIO_SCORES: [],
        LIPSYNC_SCORES: [],
    }
    for i, req in enumerate(requests):
        if deadline_s is not None and time.monotonic() - started > deadline_s:
            raise UpstreamUnavailableError(
                f"inference: {ENSEMBLE_NAME} did not answer {len(requests)} requests within {deadline_s:.0f} s "
                f"({i} done)"
            )
        out = client.infer(ENSEMBLE_NAME, req, [t.name for t in ENSEMBLE_OUTPUTS])
        visual, audio, lipsync = (bool(m) for m in req[MASK])  # MODALITY_ORDER
        if visual:
            parts[VISUAL_SCORES].append(np.asarray(out[VISUAL_SCORES]).reshape(-1))
            parts[HEATMAPS].append(np.asarray(out[HEATMAPS]).reshape(-1, *_OUT[HEATMAPS].dims[1:]))
        if audio:
            parts[AUDIO_SCORES].append(np.asarray(out[AUDIO_SCORES]).reshape(-1))
        if lipsync:
            parts[LIPSYNC_SCORES].append(np.asarray(out[LIPSYNC_SCORES]).reshape(-1))
        if progress is not None:
            progress((i + 1) / len(requests))

    def scored(
        key: str, spans: tuple[tuple[float, float], ...], tracks: tuple[int, ...] | None = None
    ) -> ScoredItems | None:
        if not parts[key]:
            return None
        scores = np.concatenate(parts[key]).astype(np.float32)
        if len(scores) != len(spans):
            raise ValueError(
                f"inference: {ENSEMBLE_NAME} returned {len(scores)} {key} for {len(spans)} items"
            )
        return ScoredItems(scores=scores, spans=spans, tracks=tracks)

    items = {
        "visual": scored(VISUAL_SCORES, inputs.face_spans, inputs.face_tracks),
        "audio": scored(AUDIO_SCORES, inputs.audio_spans),
        "lipsync": scored(LIPSYNC_SCORES, inputs.lipsync_spans),
    }
    heat = (
        np.concatenate(parts[HEATMAPS])
        if parts[HEATMAPS]
        else np.zeros((0, *_OUT[HEATMAPS].dims[1:]), np.float32)
    )
    return InferenceOutput(
        items=items,
        heatmaps=heat.astype(np.float32),
        requests=len(requests),
    )
