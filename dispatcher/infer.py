"""Inference: the video's face crops, audio windows, lip-sync clips and (for detectors
that look at them) whole frames to ``deepfake_ensemble``.

One request carries every item of a short video; a long one is cut into requests of at
most ``settings.max_items_per_request`` items per input group, and the chunks' per-item
scores are concatenated per detector. The verdict is computed from them once, by
``dispatcher.aggregate``. The ensemble's steps are the enabled detectors
(``dfd.ensemble.for_settings``); tensors are addressed by their names there.

An input group without items in a request (no face, no speech) is sent as one zero row:
the composing models need at least one row; that row's scores are dropped here.
Retrying on ``UNAVAILABLE`` is the client's job; the deadline bounds all chunks together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from dfd.detectors import LooksAt, scorers
from dfd.ensemble import (
    ALL_INPUTS,
    AUDIO,
    ENSEMBLE_NAME,
    EVIDENCE_OUTPUTS,
    FACES,
    FRAMES,
    HEATMAPS,
    LIPSYNC_MFCC,
    LIPSYNC_VIDEO,
    SBI_FACES,
    Ensemble,
    for_settings,
)
from dfd.errors import UpstreamUnavailableError
from dfd.features import audio_windows
from dfd.settings import Settings
from dfd.specs import AUDIO_RATE, AUDIO_SAMPLES, LIPSYNC_FPS, LIPSYNC_FRAMES
from dispatcher.aggregate import ScoredItems
from dispatcher.faces import FaceResult
from dispatcher.frames import clip_frame, pick
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
    # whole frames, only when a detector looking at frames is enabled
    frames: np.ndarray = field(default_factory=lambda: _empty(FRAMES))  # [Nf, 3, 224, 224]
    frame_spans: tuple[tuple[float, float], ...] = ()
    # SBI's own crops of the same faces, uint8 [Nv, 3, 380, 380]: one row per face crop
    # when sbi is enabled, none otherwise
    sbi_faces: np.ndarray = field(default_factory=lambda: _empty(SBI_FACES))

    def arrays(self) -> dict[str, np.ndarray]:
        """The ensemble inputs by name."""
        return {
            FACES: self.faces,
            AUDIO: self.audio,
            LIPSYNC_VIDEO: self.lipsync_video,
            LIPSYNC_MFCC: self.lipsync_mfcc,
            FRAMES: self.frames,
            SBI_FACES: self.sbi_faces,
        }

    def spans(self, looks_at: LooksAt) -> tuple[tuple[float, float], ...]:
        return {
            LooksAt.FACE_TRACK: self.face_spans,
            LooksAt.SPEECH_WINDOW: self.audio_spans,
            LooksAt.FACE_AUDIO_CLIP: self.lipsync_spans,
            LooksAt.FRAME: self.frame_spans,
        }[looks_at]


@dataclass(frozen=True)
class InferenceOutput:
    """The ensemble's answer for the whole video.

    Attributes:
        items: per enabled detector the item scores with their spans (None: no input).
        requests: how many ensemble requests were made.
        maps: every evidence output by its ensemble name (``heatmaps`` always, and
            ``sbi_heatmaps`` ``[Nv, 12, 12]`` when sbi runs), one map per item.
    """

    items: dict[str, ScoredItems | None]
    requests: int
    maps: dict[str, np.ndarray]

    @property
    def heatmaps(self) -> np.ndarray:
        """The visual model's ``[Nv, 8, 8]`` maps, one per face crop."""
        return self.maps[HEATMAPS]


def _empty(name: str) -> np.ndarray:
    t = ALL_INPUTS[name]
    return np.zeros((0, *t.dims[1:]), dtype=t.numpy_dtype)


def _rows(parts: Sequence[np.ndarray], name: str) -> np.ndarray:
    """``parts`` as one array of input ``name``'s dtype: the array they are cut from, as it
    is, where each part is its row of the same index (``face_crops`` cuts the crops so),
    else a stacked copy."""
    if not parts:
        return _empty(name)
    block = parts[0].base
    if (
        isinstance(block, np.ndarray)
        and block.dtype == ALL_INPUTS[name].numpy_dtype
        and len(block) == len(parts)
        and all(
            p.base is block and p.ctypes.data == block[i].ctypes.data for i, p in enumerate(parts)
        )
    ):
        return block
    return np.stack(parts).astype(ALL_INPUTS[name].numpy_dtype, copy=False)


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


def speech_windows(
    audio: np.ndarray | None, speech: Speech, settings: Settings
) -> tuple[np.ndarray, tuple[tuple[float, float], ...]]:
    """The audio windows of ``audio`` that hold enough speech, with their spans (the
    speech-window items of :func:`build_inputs`)."""
    if speech.found and audio is not None:
        every = audio_windows(audio, settings.audio_hop_s).astype(np.float32, copy=False)
        spans = window_spans(audio.size, settings.audio_hop_s, len(every))
        keep = [i for i, (a, b) in enumerate(spans) if speech.share(a, b) >= MIN_WINDOW_SPEECH]
        if keep:
            return every[keep], tuple(spans[i] for i in keep)
    return _empty(AUDIO), ()


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
    face_arr = _rows([c.pixels for c in faces.crops], FACES)
    t = [media.frames[c.frame_pos].time_s for c in faces.crops]
    face_spans = tuple((s, s + interval) for s in t)
    face_tracks = tuple(c.track for c in faces.crops)
    sbi_arr = _rows([c.pixels for c in faces.sbi_crops], SBI_FACES)
    wins, audio_spans = speech_windows(media.audio, speech, settings)
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
    frames, frame_spans = _frames(media, interval, settings)
    return VideoItems(
        face_arr,
        face_spans,
        face_tracks,
        wins,
        audio_spans,
        lip_v,
        lip_a,
        lip_spans,
        frames,
        frame_spans,
        sbi_arr,
    )


def _frames(
    media: DecodedMedia, interval: float, settings: Settings
) -> tuple[np.ndarray, tuple[tuple[float, float], ...]]:
    """Whole frames as CLIP sees them (:mod:`dispatcher.frames`), only for an enabled
    detector that looks at frames: none are prepared otherwise."""
    if not media.frames or not any(d.looks_at is LooksAt.FRAME for d in scorers(settings)):
        return _empty(FRAMES), ()
    chosen = [media.frames[i] for i in pick(len(media.frames))]
    arr = np.stack([clip_frame(f.image) for f in chosen]).astype(np.float32, copy=False)
    return arr, tuple((f.time_s, f.time_s + interval) for f in chosen)


def max_items(settings: Settings, ensemble: Ensemble | None = None) -> int:
    """Items per input group in one request: the setting, but never more than a composing
    model batches (the ensemble hands each group's items to its models as one batch)."""
    limits = (ensemble or for_settings(settings)).item_limits
    return max(1, min(settings.max_items_per_request, *limits.values()))


def chunk_requests(
    inputs: VideoItems, ensemble: Ensemble, max_items: int
) -> list[tuple[dict[str, np.ndarray], frozenset[LooksAt]]]:
    """The ensemble requests for ``inputs``: at most ``max_items`` rows per group each, with
    the groups that carry real items (the others are one zero row).

    No request at all when no group has an item (nothing for any detector to look at).
    """
    arrays = inputs.arrays()
    groups = {
        d.looks_at: ensemble.group_inputs(d.looks_at) for d in (s.detector for s in ensemble.steps)
    }
    counts = {g: len(arrays[tensors[0].name]) for g, tensors in groups.items()}
    for g, tensors in groups.items():
        rows = {t.name: len(arrays[t.name]) for t in tensors}
        if len(set(rows.values())) > 1:  # e.g. faces cut without SBI's crops, sbi enabled
            raise ValueError(f"inference: the {g} inputs disagree on their item count: {rows}")
    if not any(counts.values()):
        return []
    chunks = max(-(-n // max_items) for n in counts.values())
    requests = []
    for c in range(chunks):
        lo, hi = c * max_items, (c + 1) * max_items
        req: dict[str, np.ndarray] = {}
        present = frozenset(g for g in groups if lo < counts[g])
        for g, tensors in groups.items():
            for t in tensors:
                part = (
                    arrays[t.name][lo:hi]
                    if g in present
                    else np.zeros((1, *t.dims[1:]), t.numpy_dtype)
                )
                req[t.name] = np.ascontiguousarray(part, dtype=t.numpy_dtype)
        requests.append((req, present))
    return requests


def run_ensemble(
    inputs: VideoItems,
    client: InferClient,
    settings: Settings,
    deadline_s: float | None = None,
    progress: Callable[[float], None] | None = None,
    ensemble: Ensemble | None = None,
) -> InferenceOutput:
    """Send the video's requests and combine their answers per detector.

    Args:
        inputs: from :func:`build_inputs`.
        client: reaches Triton (retries on UNAVAILABLE itself).
        settings: the enabled detectors and the chunk size.
        deadline_s: seconds all requests together may take; past it the stage fails
            as transient (Triton overloaded), so the job is retried later.
        progress: called with 0..1 after each request.
        ensemble: the ensemble Triton serves (default: that of ``settings``).

    Raises:
        UpstreamUnavailableError: Triton unreachable, or the deadline passed.
    """
    graph = ensemble or for_settings(settings)
    requests = chunk_requests(inputs, graph, max_items(settings, graph))
    outputs = [t.name for t in graph.outputs]
    started = time.monotonic()
    parts: dict[str, list[np.ndarray]] = {step.detector.name: [] for step in graph.steps}
    heat_parts: dict[str, list[np.ndarray]] = {}
    for i, (req, present) in enumerate(requests):
        if deadline_s is not None and time.monotonic() - started > deadline_s:
            raise UpstreamUnavailableError(
                f"inference: {ENSEMBLE_NAME} did not answer {len(requests)} requests within "
                f"{deadline_s:.0f} s ({i} done)"
            )
        out = client.infer(ENSEMBLE_NAME, req, outputs)
        for step in graph.steps:
            d = step.detector
            if d.looks_at not in present:
                continue
            parts[d.name].append(np.asarray(out[d.scores_tensor]).reshape(-1))
            for name in step.outputs.values():
                if name in EVIDENCE_OUTPUTS:
                    heat_parts.setdefault(name, []).append(evidence_map(out[name], name))
        if progress is not None:
            progress((i + 1) / len(requests))
    return collect(inputs, graph, parts, heat_parts, len(requests))


def evidence_map(value: np.ndarray, name: str) -> np.ndarray:
    """An answer's evidence output ``name`` as ``[rows, H, W]`` float32."""
    dims = EVIDENCE_OUTPUTS[name].dims[1:]
    return np.asarray(value, dtype=np.float32).reshape(-1, *dims)


def collect(
    inputs: VideoItems,
    graph: Ensemble,
    parts: dict[str, list[np.ndarray]],
    heat_parts: dict[str, list[np.ndarray]],
    requests: int,
) -> InferenceOutput:
    """The answers' per-detector score parts and evidence maps (each in item order) as one
    output, checked against the items' spans."""
    items: dict[str, ScoredItems | None] = {}
    for step in graph.steps:
        d = step.detector
        spans = inputs.spans(d.looks_at)
        if not parts[d.name]:
            items[d.name] = None
            continue
        scores = np.concatenate(parts[d.name]).astype(np.float32)
        if len(scores) != len(spans):
            raise ValueError(
                f"inference: {ENSEMBLE_NAME} returned {len(scores)} {d.name} scores for "
                f"{len(spans)} items"
            )
        tracks = inputs.face_tracks if d.looks_at is LooksAt.FACE_TRACK else None
        items[d.name] = ScoredItems(scores=scores, spans=spans, tracks=tracks)
    maps = {
        name: np.concatenate(heat_parts[name]).astype(np.float32)
        if heat_parts.get(name)
        else np.zeros((0, *EVIDENCE_OUTPUTS[name].dims[1:]), np.float32)
        for name in {n for s in graph.steps for n in s.outputs.values() if n in EVIDENCE_OUTPUTS}
        | {HEATMAPS}
    }
    return InferenceOutput(items=items, requests=requests, maps=maps)


def score_with_version(
    inputs: VideoItems,
    client: InferClient,
    ensemble: Ensemble,
    detector: str,
    version: int,
) -> ScoredItems | None:
    """``detector``'s items scored by one version of its model, called directly (a
    rollout's candidate served beside the version the ensemble pins); ``None`` when the
    video has none of its items."""
    step = ensemble.step(detector)
    arrays = inputs.arrays()
    first = next(iter(step.inputs.values()))
    n = len(arrays[first])
    if n == 0:
        return None
    size = step.model.max_batch_size or n
    parts = []
    for lo in range(0, n, size):
        req = {
            mine: np.ascontiguousarray(arrays[theirs][lo : lo + size])
            for mine, theirs in step.inputs.items()
        }
        out = client.infer(step.model.name, req, ["score"], version=version)
        parts.append(np.asarray(out["score"], dtype=np.float32).reshape(-1))
    d = step.detector
    tracks = inputs.face_tracks if d.looks_at is LooksAt.FACE_TRACK else None
    return ScoredItems(np.concatenate(parts), inputs.spans(d.looks_at), tracks)
