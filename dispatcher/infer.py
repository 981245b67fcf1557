"""Inference: the video's face crops, audio windows and lip-sync clips to ``deepfake_ensemble``.

One request carries every item of a short video; a long one is cut into requests of at
most ``settings.max_items_per_request`` items per modality, and the chunks' per-item scores
are concatenated. The video's confidence is then recomputed with
:func:`ensemble_config.fusion.fuse` over all items, which is exactly what the ensemble's
fusion step computes for a single request; for one chunk the two agree (checked).

A modality without items (no face, no audio, a silent track) is sent as one zero row with
mask 0: the ensemble's composing models need at least one row, the fusion ignores it.
Retrying on ``UNAVAILABLE`` is the client's job; the deadline bounds all chunks together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dfd.errors import UpstreamUnavailableError
from dfd.features import audio_windows
from dfd.settings import Settings
from dfd.specs import (
    AUDIO_RATE,
    AUDIO_SAMPLES,
    ENSEMBLE_INPUTS,
    ENSEMBLE_NAME,
    ENSEMBLE_OUTPUTS,
    LIPSYNC_FPS,
    LIPSYNC_FRAMES,
)
from dfd.specs import spec as model_spec
from dfd.states import MODALITY_ORDER
from dispatcher.aggregate import ScoredItems
from dispatcher.decode import DecodedMedia, audio_energy_db
from dispatcher.faces import FaceResult, InferClient

# Below this level a track is silence (or hum): the audio and lip-sync models would be
# judging noise, so those modalities are marked unused.
SILENCE_DBFS = -50.0

_IN = {t.name: t for t in ENSEMBLE_INPUTS}
_OUT = {t.name: t for t in ENSEMBLE_OUTPUTS}
_IN_FACES, _IN_AUDIO, _IN_LIP_V, _IN_LIP_A, _IN_MASK, _IN_WEIGHTS = (
    t.name for t in ENSEMBLE_INPUTS
)
_OUT_CONF, _OUT_MOD, _OUT_VISUAL, _OUT_HEAT, _OUT_AUDIO, _OUT_LIP = (
    t.name for t in ENSEMBLE_OUTPUTS
)


@dataclass(frozen=True)
class ModelInputs:
    """Every item of one video, per modality, with the time span each covers."""

    faces: np.ndarray  # [Nv, 3, FACE_SIZE, FACE_SIZE]
    face_spans: tuple[tuple[float, float], ...]
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
        confidence: fused over all items (:func:`fuse`).
        modality_scores: per modality mean item score, NaN where unused.
        requests: how many ensemble requests were made.
    """

    items: dict[str, ScoredItems | None]
    heatmaps: np.ndarray
    confidence: float
    modality_scores: np.ndarray
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


def has_speech_level(audio: np.ndarray | None) -> bool:
    """True when the track is louder than :data:`SILENCE_DBFS`."""
    return audio is not None and audio.size > 0 and audio_energy_db(audio) > SILENCE_DBFS


def build_inputs(media: DecodedMedia, faces: FaceResult, settings: Settings) -> ModelInputs:
    """Stack the video's items per modality; an unusable modality gets zero items."""
    interval = 1.0 / settings.sample_fps
    if faces.crops:
        face_arr = np.stack([c.pixels for c in faces.crops]).astype(np.float32, copy=False)
        t = [media.frames[c.frame_pos].time_s for c in faces.crops]
        face_spans = tuple((s, s + interval) for s in t)
    else:
        face_arr, face_spans = _empty(_IN_FACES), ()
    if has_speech_level(media.audio):
        assert media.audio is not None
        wins = audio_windows(media.audio, settings.audio_hop_s).astype(np.float32, copy=False)
        audio_spans = window_spans(media.audio.size, settings.audio_hop_s, len(wins))
    else:
        wins, audio_spans = _empty(_IN_AUDIO), ()
    if faces.clips and len(audio_spans):
        lip_v = np.stack([c.video for c in faces.clips]).astype(np.float32, copy=False)
        lip_a = np.stack([c.mfcc for c in faces.clips]).astype(np.float32, copy=False)
        clip_s = LIPSYNC_FRAMES / LIPSYNC_FPS
        lip_spans = tuple((c.start_s, c.start_s + clip_s) for c in faces.clips)
    else:
        lip_v, lip_a, lip_spans = _empty(_IN_LIP_V), _empty(_IN_LIP_A), ()
    return ModelInputs(face_arr, face_spans, wins, audio_spans, lip_v, lip_a, lip_spans)


def max_items(settings: Settings) -> int:
    """Items per modality in one request: the setting, but never more than a composing
    model batches (the ensemble hands each modality's items to its model as one batch)."""
    served = min(
        model_spec(name).max_batch_size
        for name in (settings.visual_model, settings.audio_model, settings.lipsync_model)
    )
    return max(1, min(settings.max_items_per_request, served))


def chunk_requests(
    inputs: ModelInputs, weights: tuple[float, float, float], max_items: int
) -> list[dict[str, np.ndarray]]:
    """The ensemble requests for ``inputs``: at most ``max_items`` rows per modality each.

    Every request carries all three modalities (a zero row and mask 0 where a chunk has
    none of a modality's items) and the same weights.
    """
    arrays = {
        _IN_FACES: inputs.faces,
        _IN_AUDIO: inputs.audio,
        _IN_LIP_V: inputs.lipsync_video,
        _IN_LIP_A: inputs.lipsync_mfcc,
    }
    counts = [len(inputs.faces), len(inputs.audio), len(inputs.lipsync_video)]
    chunks = max(1, *(-(-n // max_items) for n in counts))
    w = np.asarray(weights, dtype=_IN[_IN_WEIGHTS].numpy_dtype)
    requests = []
    for c in range(chunks):
        lo, hi = c * max_items, (c + 1) * max_items
        req: dict[str, np.ndarray] = {}
        mask = []
        for names, n in (
            ((_IN_FACES,), counts[0]),
            ((_IN_AUDIO,), counts[1]),
            ((_IN_LIP_V, _IN_LIP_A), counts[2]),
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
        req[_IN_MASK] = np.asarray(mask, dtype=_IN[_IN_MASK].numpy_dtype)
        req[_IN_WEIGHTS] = w
        requests.append(req)
    return requests


def run_ensemble(
    inputs: ModelInputs,
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
    from ensemble_config.fusion import fuse

    weights = settings.fusion_weights()
    requests = chunk_requests(inputs, weights, max_items(settings))
    started = time.monotonic()
    parts: dict[str, list[np.ndarray]] = {
        _OUT_VISUAL: [],
        _OUT_HEAT: [],
        _OUT_AUDIO: [],
        _OUT_LIP: [],
    }
    single: dict[str, np.ndarray] | None = None
    for i, req in enumerate(requests):
        if deadline_s is not None and time.monotonic() - started > deadline_s:
            raise UpstreamUnavailableError(
                f"inference: {ENSEMBLE_NAME} did not answer {len(requests)} requests within {deadline_s:.0f} s "
                f"({i} done)"
            )
        out = client.infer(ENSEMBLE_NAME, req, [t.name for t in ENSEMBLE_OUTPUTS])
        single = out
        mask = req[_IN_MASK]
        if mask[0]:
            parts[_OUT_VISUAL].append(np.asarray(out[_OUT_VISUAL]).reshape(-1))
            parts[_OUT_HEAT].append(
                np.asarray(out[_OUT_HEAT]).reshape(-1, *_OUT[_OUT_HEAT].dims[1:])
            )
        if mask[1]:
            parts[_OUT_AUDIO].append(np.asarray(out[_OUT_AUDIO]).reshape(-1))
        if mask[2]:
            parts[_OUT_LIP].append(np.asarray(out[_OUT_LIP]).reshape(-1))
        if progress is not None:
            progress((i + 1) / len(requests))

    def scored(key: str, spans: tuple[tuple[float, float], ...]) -> ScoredItems | None:
        if not parts[key]:
            return None
        scores = np.concatenate(parts[key]).astype(np.float32)
        if len(scores) != len(spans):
            raise ValueError(
                f"inference: {ENSEMBLE_NAME} returned {len(scores)} {key} for {len(spans)} items"
            )
        return ScoredItems(scores=scores, spans=spans)

    items = {
        "visual": scored(_OUT_VISUAL, inputs.face_spans),
        "audio": scored(_OUT_AUDIO, inputs.audio_spans),
        "lipsync": scored(_OUT_LIP, inputs.lipsync_spans),
    }
    modality_scores, confidence = fuse(
        {k: (v.scores if v else None) for k, v in items.items()}, weights
    )
    if len(requests) == 1 and single is not None:
        # One request: the server-side fusion saw exactly what fuse() saw.
        served = float(np.asarray(single[_OUT_CONF]).reshape(-1)[0])
        if any(inputs.mask) and abs(served - confidence) > 1e-4:
            raise ValueError(
                f"inference: {ENSEMBLE_NAME} fused confidence {served:.6f} differs from the reference {confidence:.6f}"
            )
    heat = (
        np.concatenate(parts[_OUT_HEAT])
        if parts[_OUT_HEAT]
        else np.zeros((0, *_OUT[_OUT_HEAT].dims[1:]), np.float32)
    )
    return InferenceOutput(
        items=items,
        heatmaps=heat.astype(np.float32),
        confidence=float(confidence),
        modality_scores=modality_scores,
        requests=len(requests),
    )
