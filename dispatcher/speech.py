"""Where the speech is: silero-vad (served by Triton as ``vad``) over the 16 kHz track.

The audio detectors were trained on speech: on music, a test tone, hum or silence their
score means nothing (a 440 Hz tone scored P(spoof) 0.98). So before any audio detector
runs, the voice-activity detector gives P(speech) per 32 ms frame; frames above
:data:`SPEECH_THRESHOLD` that form runs of at least :data:`MIN_SPEECH_S` are speech.
The audio windows and lip-sync clips scored are only those that hold enough speech;
a track without any is "no speech", and the audio detectors are not applicable to it.

The model is stateful (an LSTM), sent as consecutive blocks of at most
:data:`BLOCK_FRAMES` frames with the state carried from one block's answer to the next
request, as silero-vad's own sequence front-end does. Pure apart from the client.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dfd.specs import AUDIO_RATE, VAD_CONTEXT, VAD_FRAME, VAD_STATE
from dispatcher.triton_client import InferClient

VAD_MODEL = "vad"
FRAME_S = VAD_FRAME / AUDIO_RATE
BLOCK_FRAMES = 512  # ~16 s of audio per request
SPEECH_THRESHOLD = 0.5  # silero-vad's default
MIN_SPEECH_S = 0.25  # shorter blips (a click, a cough) are not speech
MAX_GAP_S = 0.1  # pauses shorter than this inside speech are bridged
# An audio window or a lip-sync clip is scored only when this share of it is speech.
MIN_WINDOW_SPEECH = 0.25


@dataclass(frozen=True)
class Speech:
    """The speech found in a track.

    Attributes:
        probs: P(speech) per 32 ms frame.
        segments: ``(start_s, end_s)`` of each run of speech.
    """

    probs: np.ndarray
    segments: tuple[tuple[float, float], ...]

    @property
    def seconds(self) -> float:
        return float(sum(e - s for s, e in self.segments))

    @property
    def found(self) -> bool:
        return bool(self.segments)

    def share(self, start_s: float, end_s: float) -> float:
        """The share of ``[start_s, end_s)`` that is speech."""
        if end_s <= start_s:
            return 0.0
        overlap = sum(max(0.0, min(e, end_s) - max(s, start_s)) for s, e in self.segments)
        return overlap / (end_s - start_s)


NO_SPEECH = Speech(np.zeros(0, np.float32), ())


def frame_blocks(audio: np.ndarray, max_frames: int = BLOCK_FRAMES) -> list[np.ndarray]:
    """``audio`` as blocks of ``[frames, VAD_CONTEXT + VAD_FRAME]``: each frame with the 64
    samples before it in front (zeros before the first); the last frame zero-padded."""
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    count = -(-audio.size // VAD_FRAME)
    frames = np.zeros((count, VAD_FRAME), np.float32)
    frames.reshape(-1)[: audio.size] = audio
    context = np.zeros((count, VAD_CONTEXT), np.float32)
    if count > 1:
        context[1:] = frames[:-1, -VAD_CONTEXT:]
    rows = np.concatenate((context, frames), axis=1)
    return [rows[i : i + max_frames] for i in range(0, count, max_frames)]


def speech_probs(audio: np.ndarray, client: InferClient) -> np.ndarray:
    """P(speech) per 32 ms frame of a 16 kHz mono track, from the ``vad`` model."""
    if audio.size == 0:
        return np.zeros(0, np.float32)
    h = np.zeros((1, 1, VAD_STATE), np.float32)
    c = np.zeros((1, 1, VAD_STATE), np.float32)
    out = []
    for block in frame_blocks(audio):
        answer = client.infer(VAD_MODEL, {"input": block, "h": h, "c": c})
        out.append(np.asarray(answer["speech_probs"], np.float32).reshape(-1))
        h = np.asarray(answer["hn"], np.float32).reshape(1, 1, VAD_STATE)
        c = np.asarray(answer["cn"], np.float32).reshape(1, 1, VAD_STATE)
    return np.concatenate(out)


def segments(probs: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Runs of speech from per-frame probabilities: above the threshold, pauses shorter
    than :data:`MAX_GAP_S` bridged, runs shorter than :data:`MIN_SPEECH_S` dropped."""
    runs: list[list[float]] = []
    for i in np.flatnonzero(probs >= SPEECH_THRESHOLD):
        start = i * FRAME_S
        if runs and start - runs[-1][1] <= MAX_GAP_S + 1e-9:
            runs[-1][1] = start + FRAME_S
        else:
            runs.append([start, start + FRAME_S])
    return tuple((round(s, 3), round(e, 3)) for s, e in runs if e - s >= MIN_SPEECH_S - 1e-9)


def find_speech(audio: np.ndarray | None, client: InferClient) -> Speech:
    """The speech in ``audio`` (none for a missing or empty track)."""
    if audio is None or audio.size == 0:
        return NO_SPEECH
    probs = speech_probs(audio, client)
    return Speech(probs, segments(probs))
