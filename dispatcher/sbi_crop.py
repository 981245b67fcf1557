"""SBI's own face crop, cut as its authors cut it (``src/inference/preprocess.py`` of
mapooon/SelfBlendedImages, ``crop_face(..., crop_by_bbox=True, phase='test')``).

Their test-time crop is the face detector's box grown by 1/8 of its width on the left and
right and 1/8 of its height above and below, unrotated, clamped to the frame::

    x0' = max(0, int(x0 - w / 8))     x1' = min(W, int(x1 + w / 8) + 1)
    y0' = max(0, int(y0 - h / 8))     y1' = min(H, int(y1 + h / 8) + 1)

the rows ``[y0', y1')`` and columns ``[x0', x1')`` of the RGB frame resized (not kept
square) to 380 x 380 by ``cv2.resize`` (bilinear, pixel centres aligned, no
anti-aliasing), and the model reads it as ``float / 255``. The box here is YuNet's, in
place of their RetinaFace's (both a tight box round the face); the crop is kept as
uint8 (433 KB a face, a quarter of float32's), and the division by 255 happens in the
served graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from dfd.specs import SBI_SIZE

MARGIN = 1 / 8  # of the box's width (left, right) and height (top, bottom), each side


@dataclass(frozen=True)
class SbiCrop:
    """One face as SBI reads it, and where it came from.

    Attributes:
        box: ``(x0, y0, x1, y1)``, the frame's columns ``[x0, x1)`` and rows ``[y0, y1)``
            resized to the crop (the map over the crop lies over them).
        pixels: RGB uint8 ``[3, SBI_SIZE, SBI_SIZE]``.
    """

    box: tuple[int, int, int, int]
    pixels: np.ndarray


def sbi_box(
    face_box: tuple[float, float, float, float], frame_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The frame region the authors crop for a face box ``(x0, y0, x1, y1)`` in a frame
    ``(width, height)``: their margins, their truncation to integers, clamped."""
    x0, y0, x1, y1 = face_box
    width, height = frame_size
    w, h = x1 - x0, y1 - y0
    left = max(0, int(x0 - w * MARGIN))
    right = min(width, int(x1 + w * MARGIN) + 1)
    top = max(0, int(y0 - h * MARGIN))
    bottom = min(height, int(y1 + h * MARGIN) + 1)
    # a box of a frame's last pixel rows still keeps one pixel
    return left, top, max(right, left + 1), max(bottom, top + 1)


def sbi_crop(
    image: np.ndarray,
    face_box: tuple[float, float, float, float],
    out: np.ndarray | None = None,
) -> SbiCrop:
    """SBI's crop of the face at ``face_box`` in the RGB uint8 frame ``image``, written into
    ``out`` (uint8 ``[3, SBI_SIZE, SBI_SIZE]``) where given: a row of the block that goes to
    Triton whole.

    The region is cut, then resized with Pillow's bilinear *transform* rather than its
    ``resize``: a transform samples each output pixel's centre from the four nearest input
    pixels (the cut's edge pixels repeated past it), which is OpenCV's ``INTER_LINEAR``,
    while ``resize`` widens its filter when shrinking (anti-aliasing), which OpenCV's does
    not; faces larger than 380 px are shrunk as the authors shrink them. Each channel is
    resampled in float and rounded, as OpenCV rounds (Pillow's 8-bit transform truncates,
    half a grey level darker on average); twice the cost of an 8-bit transform (~10 ms a
    face against SBI's ~325 ms of inference).
    """
    h, w = image.shape[:2]
    box = sbi_box(face_box, (w, h))
    x0, y0, x1, y1 = box
    pixels = np.empty((3, SBI_SIZE, SBI_SIZE), np.uint8) if out is None else out
    for c in range(3):
        channel = Image.fromarray(image[y0:y1, x0:x1, c].astype(np.float32), mode="F")
        resampled = channel.transform(
            (SBI_SIZE, SBI_SIZE),
            Image.Transform.EXTENT,
            (0, 0, x1 - x0, y1 - y0),
            resample=Image.Resampling.BILINEAR,
        )
        np.rint(np.clip(np.asarray(resampled), 0, 255), out=pixels[c], casting="unsafe")
    return SbiCrop(box=box, pixels=pixels)
