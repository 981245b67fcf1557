"""What ``bench_ort`` times for each model the registry can serve, and how many items of it
the 30 s 1080p benchmark clip gives.

One :class:`Bench` per model: the face detector, then every detector of
``dfd.detectors.DETECTORS`` (the speech gate, the voice encoder and the face mesh of mouth
sync included), each with its checkpoint as the settings choose it, what one item is, the
batch sizes timed and a batch of inputs shaped as its spec says. :func:`clip_items` counts
a model's items on the benchmark clip (``bench_stages.build_clip``: one GRID speaker,
looped to 30 s, 1920x1080) with the dispatcher's own functions and the settings, so a
changed sampling rate, hop or clip limit changes the count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dfd.detectors import DETECTORS, LooksAt
from dfd.features import audio_windows
from dfd.settings import Settings
from dfd.specs import AUDIO_RATE, LIPSYNC_FRAMES, ModelSpec, spec
from dfd.voice_features import partial_slices
from dispatcher.faces import detect_batch, detector_canvas
from dispatcher.frames import MAX_FRAMES, pick
from dispatcher.sampling import clip_starts, sample_times
from dispatcher.speech import BLOCK_FRAMES, FRAME_S
from dispatcher.voice import MAX_BATCH, voice_segments

CLIP_S = 30.0  # the benchmark clip (bench_stages.build_clip)
CLIP_SIZE = (1920, 1080)
FACES_PER_FRAME = 1  # one GRID speaker on every frame
FACE_DETECTOR = "face_detector"
# batch sizes timed by default: the models of ~0.1 s an item or more at 1 and 4 only
BATCHES: dict[str, tuple[int, ...]] = {
    FACE_DETECTOR: (1, 4, 16),
    "visual": (1, 4, 16, 32),
    "audio": (1, 4),
    "audio_asv5": (1, 4),
    "rawgat": (1, 4),
    "ufd": (1,),  # ~80 GFLOP a frame: about 4 core-seconds a pass
    "lipsync": (1, 4, 8),
    "mouth_sync": (1, 4, LIPSYNC_FRAMES),  # the dispatcher sends a clip's 25 crops at once
    "sbi": (1, 4),
    "speech": (BLOCK_FRAMES,),  # frames per block, as dispatcher.speech sends the track
    "voice": (1, 4, 16),
}
MAX_ROUNDS = {"ufd": 2}


@dataclass(frozen=True)
class Bench:
    """One model as ``bench_ort`` times it.

    Attributes:
        name: the detector's name in results (the face detector: its Triton role).
        checkpoint: the checkpoint timed.
        item: what one item is, in words.
        batches: batch sizes timed (the speech gate: 32 ms frames per block).
        random_weights: its weights are the user's to fetch, so a stand-in at the real
            shape with random weights is timed (``export.random_weights``).
        max_rounds: at most this many timing rounds (the slowest model).
    """

    name: str
    checkpoint: str
    item: str
    batches: tuple[int, ...]
    random_weights: bool = False
    max_rounds: int | None = None

    @property
    def spec(self) -> ModelSpec:
        return spec(self.checkpoint)

    def items(self, batch: int) -> float:
        """Items in one call of ``batch``: for the speech gate, seconds of audio."""
        return batch * FRAME_S if self.spec.max_batch_size == 0 else float(batch)

    def feeds(self, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random inputs for one call, in each input's range and type (pixels 0..255 where
        the model takes them so, uint8 where it takes bytes, waveforms in [-1, 1], the rest
        in [0, 1])."""
        width, height, _ = detector_canvas(*CLIP_SIZE)
        out = {}
        for t in self.spec.inputs:
            if self.spec.max_batch_size == 0:  # the speech gate: rows of frames, a state
                shape = tuple(batch if d == -1 else d for d in t.dims)
            else:
                dims = (3, height, width) if t.dims == (3, -1, -1) else t.dims
                shape = (batch, *dims)
            x = rng.random(shape, dtype=np.float32)
            if t.name in ("image", "video") and self.name in (FACE_DETECTOR, "lipsync"):
                x *= 255
            elif t.name in ("waveform", "input"):
                x = 2 * x - 1
            elif t.name in ("h", "c"):
                x[:] = 0
            if np.dtype(t.numpy_dtype) == np.uint8:  # pixels sent as bytes (SBI's crops)
                x = (x * 255).astype(np.uint8)
            out[t.name] = x
        return out


_ITEM = {
    LooksAt.FRAME: "a whole frame at 224 px",
    LooksAt.SPEECH_WINDOW: "a 4.04 s window of 16 kHz audio",
    LooksAt.FACE_AUDIO_CLIP: "a 1 s clip: 25 grey 112 px face crops and their MFCC",
    LooksAt.FILE: "1 s of 16 kHz audio (31.25 frames of 32 ms)",
    LooksAt.SPEECH_SEGMENT: "a 1.6 s partial of 40-band mels",
    LooksAt.MOUTH: "a 192 px face crop (one frame at 25 fps)",
}


def _item(checkpoint: str, looks_at: LooksAt) -> str:
    """What one item is: a face crop at the size its model takes (256 px for the visual
    model, 380 px for SBI's own crop), else by what the detector looks at."""
    if looks_at is LooksAt.FACE_TRACK:
        side = spec(checkpoint).inputs[0].dims[-1]
        return f"a {side} px face crop"
    return _ITEM[looks_at]


def benches(settings: Settings) -> dict[str, Bench]:
    """Every model the registry can serve, by name: the face detector, then the detectors."""
    width, height, _ = detector_canvas(*CLIP_SIZE)
    out = {
        FACE_DETECTOR: Bench(
            FACE_DETECTOR,
            settings.face_model,
            f"a frame at the detection canvas ({width}x{height} for 1080p)",
            BATCHES[FACE_DETECTOR],
        )
    }
    for d in DETECTORS.values():
        out[d.name] = Bench(
            d.name,
            d.checkpoint(settings),
            _item(d.checkpoint(settings), d.looks_at),
            BATCHES.get(d.name, (1, 4, 16)),
            random_weights=d.fetched_by_user,
            max_rounds=MAX_ROUNDS.get(d.name),
        )
    return out


@dataclass(frozen=True)
class ClipItems:
    """A model's share of the benchmark clip.

    Attributes:
        items: items per clip (for the speech gate: seconds of audio).
        batch: the batch the dispatcher sends them in (the speech gate: frames per block).
        counted: how they were counted, in words.
    """

    items: float
    batch: int
    counted: str


def clip_items(name: str, settings: Settings, seconds: float = CLIP_S) -> ClipItems:
    """How many items of the model ``name`` (a :func:`benches` key) a video of ``seconds``
    at 1080p with one face and speech throughout gives, with ``settings``.

    Speech throughout is an upper bound: the speech gate drops audio windows and lip-sync
    clips with under a quarter of speech.
    """
    model = spec(benches(settings)[name].checkpoint)
    limit = min(settings.max_items_per_request, max(1, model.max_batch_size))
    frames = len(list(sample_times(settings.sample_fps, seconds)))
    clips = len(clip_starts(seconds, settings.sample_fps, settings.lipsync_max_clips))
    if name == FACE_DETECTOR:
        w, h, _ = detector_canvas(*CLIP_SIZE)
        batch = detect_batch(model.max_batch_size, 3 * w * h * 4)
        return ClipItems(
            frames, min(frames, batch), f"{frames} frames sampled at {settings.sample_fps:g} fps"
        )
    looks_at = DETECTORS[name].looks_at
    if looks_at is LooksAt.FACE_TRACK:
        n = frames * FACES_PER_FRAME
        return ClipItems(
            n, min(n, limit), f"{n} crops: {FACES_PER_FRAME} face on each sampled frame"
        )
    if looks_at is LooksAt.FRAME:
        n = len(pick(frames))
        return ClipItems(
            n, min(n, limit), f"{n} of the {frames} sampled frames (at most {MAX_FRAMES})"
        )
    if looks_at is LooksAt.SPEECH_WINDOW:
        n = len(
            audio_windows(np.zeros(int(seconds * AUDIO_RATE), np.float32), settings.audio_hop_s)
        )
        return ClipItems(
            n, min(n, limit), f"{n} windows at a {settings.audio_hop_s:g} s hop over {seconds:g} s"
        )
    if looks_at is LooksAt.FACE_AUDIO_CLIP:
        return ClipItems(
            clips, min(clips, limit), f"{clips} one-second clips (DFD_LIPSYNC_MAX_CLIPS)"
        )
    if looks_at is LooksAt.MOUTH:
        n = clips * LIPSYNC_FRAMES
        return ClipItems(n, LIPSYNC_FRAMES, f"{n} crops: the {clips} lip-sync clips at 25 fps")
    if looks_at is LooksAt.FILE:
        return ClipItems(seconds, BLOCK_FRAMES, f"{seconds:g} s of audio, in 32 ms frames")
    segments = voice_segments([(0.0, seconds)])
    n = sum(len(partial_slices(round(s.speech_s * AUDIO_RATE))) for s in segments)
    return ClipItems(
        n, min(n, MAX_BATCH), f"{n} partials of {len(segments)} ~3 s segments of one turn"
    )
