"""Where the voice changes: cosine similarity of consecutive speech segments' speaker embeddings.

Each speech segment is embedded by the voice encoder (Resemblyzer's GE2E, served as
``voice``; the front end is ``dfd.voice_features``): a unit vector of 256 numbers, the
normalised mean of its 1.6 s partials'. Two segments of one voice point the same way; a
change of speaker, or of the voice a generator was cloning, shows as a low cosine between
one segment and the next. :func:`voice_changes` is pure: embeddings and spans in, the
points of change out, as evidence for the timeline ("voice changes at 12.4 s"). It is not
a detector and does not enter the verdict.

:data:`VOICE_CHANGE_SIMILARITY` was picked from measured distributions, not from one
file: over the 11 GRID clips of ``media/grid`` (10 speakers; one speaker in two clips),
each cut into two 1.5 s halves and embedded by our encoder, same-speaker pairs (15) had
cosine 0.60-0.80 and different-speaker pairs (216) 0.39-0.82 (95th percentile 0.75). The
threshold is their equal-error point, 0.66, where 27 % of same-speaker pairs fall below
it and 26 % of different-speaker pairs rise above it. Whole 3 s clips separate better
(the one same-speaker pair 0.83, different-speaker pairs 0.56-0.82) but still overlap:
on clips this short a low similarity is a hint, not proof.

What the pipeline reports (:func:`check_voice`) is the stricter rule measured by
``benchmarks/bench_voice_changes.py`` (``benchmarks/results/voice_changes.md``): speech
runs split into turns at pauses of 0.5 s, turns with under 1.6 s of speech left out, long
turns cut into ~3 s pieces; a change is a boundary where the mean embedding of up to two
segments before it and up to two after it have cosine below :data:`CHANGE_SIMILARITY`
(0.65), the lowest among its neighbours. On 31 real one-voice recordings of the wild set
and 13 GRID ones it reported no change (the lowest one-voice boundary there was 0.731;
0.75 gave 2 false changes); it found 157 of 182 joins of two different real speakers of
the wild set and 33 of 108 GRID joins (68 of them hold a clip with under 1.6 s of speech,
which is not compared; 33 of the 40 others).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dfd import voice_features as vf
from dfd.errors import InputError
from dfd.specs import AUDIO_RATE, VOICE_EMBEDDING
from dispatcher.triton_client import InferClient

VOICE_CHANGE_SIMILARITY = 0.66


def voice_changes(
    embeddings: np.ndarray | Sequence[np.ndarray],
    spans: Sequence[tuple[float, float]],
    threshold: float = VOICE_CHANGE_SIMILARITY,
) -> list[tuple[float, float]]:
    """The points where the voice changes between consecutive speech segments.

    Args:
        embeddings: one speaker embedding per segment, (segments, dims); need not be
            unit length (each is normalised here).
        spans: each segment's (start_s, end_s) in the media's time, in time order.
        threshold: a cosine below it between one segment and the next is a change.

    Returns:
        ``(time_s, similarity)`` per change, in time order: ``time_s`` is the start of the
        segment whose voice differs from the one before it, ``similarity`` the cosine.

    Raises:
        InputError: the embeddings are not a non-empty finite 2-D array with one row per
            span, a span is not finite with start <= end, or the spans are out of order.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[1] == 0:
        raise InputError(
            f"voice changes: expected embeddings (segments, dims), got shape {emb.shape}"
        )
    if emb.shape[0] != len(spans):
        raise InputError(
            f"voice changes: {emb.shape[0]} embeddings for {len(spans)} spans; need one each"
        )
    if not np.all(np.isfinite(emb)):
        raise InputError("voice changes: embeddings hold NaN or infinite values")
    norms = np.linalg.norm(emb, axis=1)
    if np.any(norms == 0):
        raise InputError(f"voice changes: segment {int(np.argmin(norms))} has a zero embedding")
    times = np.asarray(spans, dtype=np.float64).reshape(-1, 2) if len(spans) else np.zeros((0, 2))
    if not np.all(np.isfinite(times)) or np.any(times[:, 0] > times[:, 1]):
        raise InputError(f"voice changes: spans must be finite (start_s, end_s), got {spans!r}")
    if np.any(np.diff(times[:, 0]) < 0):
        raise InputError("voice changes: spans must be in time order")
    unit = emb / norms[:, None]
    sims = np.sum(unit[1:] * unit[:-1], axis=1)
    return [
        (float(times[i + 1, 0]), float(sims[i])) for i in range(len(sims)) if sims[i] < threshold
    ]


# --- segments, embeddings and the decision the pipeline reports ---------------------

VOICE_MODEL = "voice"
MIN_SEGMENT_S = 1.6  # one encoder partial: shorter speech is not embedded
SEGMENT_S = 3.0  # a long turn is cut into pieces of about this much speech
TURN_GAP_S = 0.5  # a pause at least this long between speech runs ends a turn
MAX_BATCH = 32  # the voice model's max_batch_size
CHANGE_SIMILARITY = 0.65  # 0.08 below the lowest one-voice boundary measured (0.731)
CHANGE_GROUP = 2  # segments either side of a boundary whose embeddings are averaged


@dataclass(frozen=True)
class VoiceSegment:
    """Speech embedded as one voice: runs of one turn, silences left out.

    Attributes:
        start_s: where its first run starts.
        end_s: where its last run ends.
        runs: the speech runs ``(start_s, end_s)`` whose samples it holds.
    """

    start_s: float
    end_s: float
    runs: tuple[tuple[float, float], ...]

    @property
    def speech_s(self) -> float:
        return float(sum(e - s for s, e in self.runs))


@dataclass(frozen=True)
class VoiceChanges:
    """What the voice-consistency check found.

    Attributes:
        segments: the segments embedded, in time order.
        changes: ``(time_s, similarity)`` per change of voice.
        similarities: per boundary between consecutive segments, the cosine the rule
            compared (of the groups either side).
    """

    segments: tuple[VoiceSegment, ...]
    changes: tuple[tuple[float, float], ...]
    similarities: tuple[float, ...]


def voice_segments(
    runs: Sequence[tuple[float, float]],
    min_s: float = MIN_SEGMENT_S,
    piece_s: float = SEGMENT_S,
    turn_gap_s: float = TURN_GAP_S,
) -> list[VoiceSegment]:
    """The speech runs as segments to embed: runs closer than ``turn_gap_s`` form a
    turn; a turn with under ``min_s`` of speech is left out; a longer one is cut into
    ``floor(speech / piece_s)`` (at least one) pieces of equal speech time."""
    turns: list[list[tuple[float, float]]] = []
    for s, e in runs:
        if turns and s - turns[-1][-1][1] < turn_gap_s:
            turns[-1].append((s, e))
        else:
            turns.append([(s, e)])
    out = []
    for turn in turns:
        total = sum(e - s for s, e in turn)
        if total < min_s - 1e-9:
            continue
        pieces = max(1, int(total // piece_s))
        size = total / pieces
        current: list[tuple[float, float]] = []
        have = 0.0
        for s, e in turn:
            while e - s > 1e-9:
                take = min(e - s, size - have)
                current.append((s, s + take))
                have += take
                s += take
                if have >= size - 1e-6:
                    out.append(_segment(current))
                    current, have = [], 0.0
        if current and sum(b - a for a, b in current) > 1e-9:
            # rounding leftovers belong to the last piece of the turn
            if out and out[-1].runs and out[-1].end_s <= current[0][0] + 1e-9:
                out[-1] = _segment([*out[-1].runs, *current])
            else:
                out.append(_segment(current))
    return out


def _segment(runs: Sequence[tuple[float, float]]) -> VoiceSegment:
    kept = tuple((round(s, 3), round(e, 3)) for s, e in runs if e - s > 1e-9)
    return VoiceSegment(kept[0][0], kept[-1][1], kept)


def segment_audio(audio: np.ndarray, segment: VoiceSegment) -> np.ndarray:
    """The segment's speech samples, its runs back to back (the pauses left out)."""
    parts = [
        audio[int(round(s * AUDIO_RATE)) : int(round(e * AUDIO_RATE))] for s, e in segment.runs
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def embed_segments(
    audio: np.ndarray, segments: Sequence[VoiceSegment], client: InferClient
) -> np.ndarray:
    """One unit speaker embedding per segment, (segments, 256), from the ``voice`` model:
    each segment's partials sent in batches of at most :data:`MAX_BATCH`."""
    mels, owner = [], []
    for k, seg in enumerate(segments):
        parts = vf.partial_mels(vf.normalize_volume(segment_audio(audio, seg)))
        mels.append(parts)
        owner.extend([k] * len(parts))
    if not mels:
        return np.zeros((0, VOICE_EMBEDDING), np.float32)
    stacked = np.concatenate(mels).astype(np.float32)
    got = []
    for i in range(0, len(stacked), MAX_BATCH):
        answer = client.infer(VOICE_MODEL, {"mels": stacked[i : i + MAX_BATCH]}, ["embedding"])
        got.append(np.asarray(answer["embedding"], np.float32).reshape(-1, VOICE_EMBEDDING))
    partials = np.concatenate(got)
    idx = np.asarray(owner)
    return np.stack([vf.mean_embedding(partials[idx == k]) for k in range(len(segments))])


def group_similarities(embeddings: np.ndarray, group: int) -> np.ndarray:
    """Per boundary between segment ``i`` and ``i + 1``: the cosine of the mean embedding of
    up to ``group`` segments before it against up to ``group`` after it."""
    unit = np.asarray(embeddings, np.float64)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    out = []
    for i in range(len(unit) - 1):
        before = unit[max(0, i + 1 - group) : i + 1].mean(axis=0)
        after = unit[i + 1 : i + 1 + group].mean(axis=0)
        out.append(float(before @ after / (np.linalg.norm(before) * np.linalg.norm(after))))
    return np.asarray(out)


def decide(
    embeddings: np.ndarray,
    segments: Sequence[VoiceSegment],
    threshold: float = CHANGE_SIMILARITY,
    group: int = CHANGE_GROUP,
) -> VoiceChanges:
    """The changes of voice: a boundary whose groups' cosine is below ``threshold`` and
    lower than its neighbouring boundaries' (one change is not reported twice)."""
    sims = group_similarities(embeddings, group) if len(segments) > 1 else np.zeros(0)
    changes = []
    for i, sim in enumerate(sims):
        if sim >= threshold:
            continue
        near = [j for j in range(i - group + 1, i + group) if 0 <= j < len(sims) and j != i]
        if any(sims[j] < sim or (sims[j] == sim and j < i) for j in near):
            continue  # a neighbouring boundary is the clearer change
        changes.append((segments[i + 1].start_s, round(float(sim), 4)))
    return VoiceChanges(tuple(segments), tuple(changes), tuple(round(float(s), 4) for s in sims))


def check_voice(
    audio: np.ndarray | None, runs: Sequence[tuple[float, float]], client: InferClient
) -> VoiceChanges:
    """The voice-consistency check of one track: its speech runs (``dispatcher.speech``)
    cut into segments, embedded by the ``voice`` model, and the rule's changes."""
    segments = voice_segments(runs)
    if audio is None or audio.size == 0 or not segments:
        return VoiceChanges((), (), ())
    return decide(embed_segments(audio, segments, client), segments)


def describe(found: VoiceChanges) -> str:
    """The check's finding in words, for the result's ``detectors.voice.detail``."""
    if not found.segments:
        return f"no turn of speech of {MIN_SEGMENT_S:g} s or more to compare"
    if len(found.segments) == 1:
        return "one segment of speech: nothing to compare it with"
    if not found.changes:
        return f"one voice across {len(found.segments)} speech segments"
    times = ", ".join(f"{t:.1f} s" for t, _ in found.changes)
    return f"voice changes at {times} ({len(found.segments)} speech segments)"
