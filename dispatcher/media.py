"""What decoding produces, whichever decoder ran: sampled frames, 16 kHz audio, 25 fps
clips, and the sizing rules both decoders follow. Pure: no decoder is imported here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dfd.settings import Settings
from dfd.specs import AUDIO_RATE, LIPSYNC_FRAMES

_MIN_SIDE = 256  # a memory cap never shrinks frames below this longer side


@dataclass(frozen=True)
class SampledFrame:
    """One frame sampled for the visual model.

    Attributes:
        index: frame number in the source, from 0: presentation time x the stream's
            average rate (the count of frames before it in a constant-rate stream).
        time_s: presentation time from the stream's start.
        image: RGB uint8 ``[H, W, 3]`` at the decoded size.
    """

    index: int
    time_s: float
    image: np.ndarray


@dataclass(frozen=True)
class LipsyncSegment:
    """``LIPSYNC_FRAMES`` grey frames at 25 fps starting at ``start_s``.

    Attributes:
        start_s: the clip's first target time; also a visual sampling time.
        frame_indices: source frame number of each clip frame (repeats where the
            source is slower than 25 fps).
        grey: uint8 ``[LIPSYNC_FRAMES, H, W]`` at the decoded size.
    """

    start_s: float
    frame_indices: tuple[int, ...]
    grey: np.ndarray


@dataclass(frozen=True)
class DecodedMedia:
    """Everything later stages read from the media file.

    Attributes:
        frames: the sampled frames in time order.
        audio: 16 kHz mono float32 in [-1, 1], aligned so sample 0 is video time 0;
            None when the file has no audio track.
        segments: 25 fps clips for the lip-sync model (none without audio).
        width, height: size of the decoded images (after the ``decode_max_side_px`` cap).
        scale: decoded size / source size.
        fps: the stream's average frame rate, if it states one.
        duration_s: video duration (from the last decoded frame when the container
            does not say).
        decoder: ``pyav`` or ``dali``.
        frames_decoded: how many video frames the decoder produced (skipped ones not).
        quarter_turns: the display rotation applied to the coded frames, counterclockwise
            quarter turns (odd: the picture shows portrait what is stored landscape).
    """

    frames: tuple[SampledFrame, ...]
    audio: np.ndarray | None
    segments: tuple[LipsyncSegment, ...]
    width: int
    height: int
    scale: float
    fps: float | None
    duration_s: float
    decoder: str
    frames_decoded: int = 0
    quarter_turns: int = 0

    @property
    def audio_duration_s(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / AUDIO_RATE


def output_size(
    width: int, height: int, max_side: int, max_pixels: float | None = None
) -> tuple[int, int]:
    """Decoded size: the source scaled down (never up) to fit ``max_side`` and, when given,
    ``max_pixels`` per frame (but not below a 256-pixel longer side); even sides."""
    scale = min(1.0, max_side / max(width, height))
    if max_pixels is not None and width * height * scale * scale > max_pixels:
        scale = max(
            math.sqrt(max_pixels / (width * height)), min(scale, _MIN_SIDE / max(width, height))
        )
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def pixel_budget(settings: Settings, duration_s: float | None, clips: int) -> float | None:
    """Most pixels per frame so that the samples (RGB) and clips (grey) fit ``decode_max_bytes``."""
    if not duration_s:
        return None
    samples = math.ceil(duration_s * settings.sample_fps)
    bytes_per_pixel = 3 * samples + LIPSYNC_FRAMES * clips
    return settings.decode_max_bytes / max(1, bytes_per_pixel)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma, as ffmpeg's ``gray`` conversion and OpenCV's ``COLOR_RGB2GRAY`` compute it."""
    y = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def audio_energy_db(audio: np.ndarray) -> float:
    """RMS level in dBFS (``-inf`` for silence); used to tell a silent track from speech."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return 20 * math.log10(rms) if rms > 0 else float("-inf")
