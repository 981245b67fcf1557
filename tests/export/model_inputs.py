"""Real inputs for every served model, made from ``media_dir`` (shared by the Triton tests).

Each function returns arrays exactly as the spec of its model wants them, so tests can
send the same arrays to Triton and to onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dfd.specs import (
    AUDIO_RATE,
    AUDIO_SAMPLES,
    FACE_SIZE,
    LIPSYNC_FRAMES,
    LIPSYNC_SIZE,
    MFCC_COEFFS,
    MFCC_PER_FRAME,
)


def faces(media_dir: Path, n: int) -> np.ndarray:
    """``n`` MesoNet face crops (deepfake and real, cycled), (n, 3, 256, 256) in [0, 1]."""
    paths = sorted((media_dir / "mesonet_faces").glob("*/*.*"))
    paths = [p for p in paths if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    crops = []
    for i in range(n):
        image = (
            Image.open(paths[i % len(paths)])
            .convert("RGB")
            .resize((FACE_SIZE, FACE_SIZE), Image.BILINEAR)
        )
        crops.append(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    return np.stack(crops).astype(np.float32)


def decode_audio(path: Path) -> np.ndarray:
    """Mono float32 samples at 16 kHz."""
    import av

    chunks = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float32)


def waveforms(media_dir: Path, n: int) -> np.ndarray:
    """``n`` ASVspoof 2019 LA windows (bonafide and spoof, cycled), (n, 64600)."""
    from dfd.features import pad_repeat

    paths = sorted((media_dir / "asvspoof2019_la").glob("*/*.flac"))
    return np.stack(
        [pad_repeat(decode_audio(paths[i % len(paths)]), AUDIO_SAMPLES) for i in range(n)]
    )


def lipsync_clip(media_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """One second of a GRID talking face: grey (1, 25, 112, 112) 0..255 and MFCC (1, 100, 13)."""
    import av

    from dfd.features import mfcc

    path = media_dir / "grid" / "id2_vcd_swwp2s.mpg"
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image = frame.to_image().convert("L")
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize(
                (LIPSYNC_SIZE, LIPSYNC_SIZE)
            )
            frames.append(np.asarray(image, dtype=np.float32))
            if len(frames) == LIPSYNC_FRAMES:
                break
    coeffs = mfcc(decode_audio(path))[: LIPSYNC_FRAMES * MFCC_PER_FRAME]
    assert coeffs.shape == (LIPSYNC_FRAMES * MFCC_PER_FRAME, MFCC_COEFFS)
    return np.stack(frames)[None], coeffs[None].astype(np.float32)


def detector_image(media_dir: Path, size: int = 640) -> np.ndarray:
    """``still/astronaut.png`` as the face detector wants it: BGR, (1, 3, size, size), 0..255."""
    image = Image.open(media_dir / "still" / "astronaut.png").convert("RGB").resize((size, size))
    rgb = np.asarray(image, dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))[None]


def ort_run(onnx_path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference: the same ONNX file in onnxruntime, every output by name."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))
