"""Real model inputs made from the project's test media, for verification and benchmarks.

Each function turns files under a media folder (laid out like ``shared/media``) into
exactly the tensors a model's spec asks for, preprocessed the way the dispatcher does:
face crops for the visual model, AASIST windows, lip-sync clips (grey mouth-centred face
crops at 25 fps plus the matching MFCC) and BGR frames for the face detector.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from PIL import Image

from dfd import features
from dfd.specs import (
    AUDIO_RATE,
    DETECTOR_SIZE,
    FACE_SIZE,
    LIPSYNC_FRAMES,
    LIPSYNC_SIZE,
    MFCC_PER_FRAME,
)


def read_audio(path: Path, rate: int = AUDIO_RATE) -> np.ndarray:
    """A media file's first audio track as mono float32 in [-1, 1] at ``rate`` Hz."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        for frame in container.decode(stream):
            chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(frame))
        chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32)


def read_frames(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """A video's frames as RGB uint8 arrays (H, W, 3), at most ``limit``."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(frames) >= limit:
                break
    return frames


def face_crops(media_dir: Path) -> np.ndarray:
    """The MesoNet authors' face crops (2 deepfake, 2 real), (4, 3, 256, 256) RGB in [0, 1]."""
    files = sorted((media_dir / "mesonet_faces").glob("*/*.jpg"))
    crops = [
        np.asarray(
            Image.open(f).convert("RGB").resize((FACE_SIZE, FACE_SIZE), Image.Resampling.BILINEAR),
            np.float32,
        )
        for f in files
    ]
    return (np.stack(crops) / 255.0).transpose(0, 3, 1, 2).astype(np.float32)


def asvspoof_windows(media_dir: Path) -> tuple[np.ndarray, list[str]]:
    """One AASIST window per ASVspoof file, (5, 64600), and each file's label folder."""
    files = sorted((media_dir / "asvspoof2019_la").glob("*/*.flac"))
    waves = [features.pad_repeat(read_audio(f)) for f in files]
    return np.stack(waves), [f.parent.name for f in files]


def detector_image(rgb: np.ndarray, size: int = DETECTOR_SIZE) -> tuple[np.ndarray, float]:
    """Letterbox an RGB frame into a ``size`` square BGR float image (3, size, size).

    Returns the image and the scale from frame pixels to detector pixels.
    """
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    resized = np.asarray(
        Image.fromarray(rgb).resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
    )
    canvas = np.zeros((size, size, 3), np.float32)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas[..., ::-1].transpose(2, 0, 1).copy(), scale


def still_image(media_dir: Path) -> np.ndarray:
    """``still/astronaut.png`` letterboxed for the detector, (1, 3, 640, 640)."""
    rgb = np.asarray(Image.open(media_dir / "still" / "astronaut.png").convert("RGB"))
    return detector_image(rgb)[0][None]


def mouth_crop(grey: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The lower-face square Light-ASD was trained on, resized to 112x112 (float 0..255).

    Light-ASD's pipeline crops a 2.8x-half-size square below the face centre, resizes it to
    224 and keeps the central 112: a square of side 0.7 * max(w, h) centred 0.2 * max(w, h)
    below the face box centre.
    """
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    side = 0.7 * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.2 * max(x2 - x1, y2 - y1)
    img = Image.fromarray(grey)
    crop = img.resize(
        (LIPSYNC_SIZE, LIPSYNC_SIZE),
        Image.Resampling.BILINEAR,
        box=(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2),
    )
    return np.asarray(crop, np.float32)


Detector = Callable[[np.ndarray], np.ndarray]
"""Frame (RGB uint8) -> face box x1, y1, x2, y2 in frame pixels."""


def lipsync_clips(
    video: Path, detect: Detector, audio_from: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One-second clips of a 25 fps talking-face video: video (C, 25, 112, 112), mfcc (C, 100, 13).

    The face is detected once, on the first frame (GRID speakers barely move); the audio
    comes from ``audio_from`` when given (a mismatched soundtrack), else from the video.
    """
    frames = read_frames(video)
    box = detect(frames[0])
    grey = [np.asarray(Image.fromarray(f).convert("L")) for f in frames]
    crops = np.stack([mouth_crop(g, box) for g in grey])
    mfcc = features.mfcc(read_audio(audio_from or video))
    per_clip = LIPSYNC_FRAMES * MFCC_PER_FRAME
    count = min(len(crops) // LIPSYNC_FRAMES, len(mfcc) // per_clip)
    vids = crops[: count * LIPSYNC_FRAMES].reshape(
        count, LIPSYNC_FRAMES, LIPSYNC_SIZE, LIPSYNC_SIZE
    )
    mfccs = mfcc[: count * per_clip].reshape(count, per_clip, -1)
    return vids.astype(np.float32), mfccs.astype(np.float32)
