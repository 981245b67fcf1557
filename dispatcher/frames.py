"""Whole sampled frames for the detectors that look at a frame (UniversalFakeDetect).

CLIP's own preprocessing, as openai/clip ``_transform`` does it on a PIL image:
``Resize(224, BICUBIC)`` of the short side (the long side ``int(224 * long / short)``),
``CenterCrop(224)`` (offsets ``int(round((side - 224) / 2))``), then ``ToTensor`` (/255).
The CLIP mean/std normalisation is the served model's (``export.models.clip_vit``).
A video's frames are spread evenly over it, at most :data:`MAX_FRAMES` of them: a ViT-L/14
pass costs about 80 GFLOP a frame.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dfd.specs import CLIP_SIZE

MAX_FRAMES = 8  # frames of one video the frame detectors see (~4 core-seconds each on CPU)


def clip_frame(image: np.ndarray, size: int = CLIP_SIZE) -> np.ndarray:
    """An RGB uint8 ``[H, W, 3]`` frame as CLIP sees it: float32 ``[3, size, size]`` in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"frame: expected RGB uint8 [H, W, 3], got {image.dtype}{list(image.shape)}"
        )
    height, width = image.shape[:2]
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    pil = Image.fromarray(image)
    if (new_w, new_h) != (width, height):
        pil = pil.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    crop = np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.float32)
    return (crop / 255.0).transpose(2, 0, 1).copy()


def pick(count: int, limit: int = MAX_FRAMES) -> list[int]:
    """Indices of at most ``limit`` of ``count`` frames, spread evenly, first and last kept."""
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})
