"""68-point landmark sequences the way LRNet's authors feed their model (for the LRNet trial).

Steps, after the authors' description (``../shared/weights/lrnet/ORIGIN.txt``) and their
demo (``demo/utils/landmark_utils.py`` of frederickszk/LRNet), written here:

1. Landmarks per frame: dlib's frontal face detector (HOG) and its 68-point shape
   predictor (iBUG 300-W order, the order LRNet was trained on; the authors use FAN 2D
   instead, whose weights are not obtainable here). The first face is searched in the
   whole frame (the largest wins); after it, in a window around the previous face, so
   the same person is followed. Frames before the first face are dropped; a later frame
   without a face, or whose face jumps by more than half its size or changes size by
   more than 30 %, takes the previous frame's landmarks (as the authors do).
2. Face crop: a square of 1.2 x the video's mean landmark-box size, centred on the
   landmark box (the centre held still while it moves less than 1.42 px), resized to
   400x400; landmarks rounded to whole pixels of that crop.
3. Calibration: pyramidal Lucas-Kanade flow carries each landmark from one crop to the
   next (seeded with the next detection), a backward pass checks it (a point that does
   not come back within 2 px, or that LK loses, keeps its detection), and a per-point
   Kalman gain merges flow and detection, the detection's variance being how far it
   moved relative to how far the flow moved (process noise 0.3).
4. Normalised ``(p - 200) / 200`` and flattened x1, y1, ..., x68, y68.

dlib's 68-point model is trained on iBUG 300-W (non-commercial research terms): this is
for evaluation only. opencv and dlib come from the ``lrnet-trial`` extra and are imported
where they are used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CROP = 400  # the authors' normalised face size
BOX_SCALE = 1.2
CENTRE_HOLD_PX = 1.42
FEEDBACK_PX = 2.0  # a point whose backward flow misses its start by more is not tracked
PROCESS_NOISE = 0.3
LK_WINDOW = (15, 15)
LK_LEVELS = 3
DETECT_MAX_SIDE = 640  # whole-frame search on a copy at most this large
WINDOW_SIDE = 260  # the search window around the previous face, resized to this side
WINDOW_FACES = 2.2  # window side in face sizes


@dataclass(frozen=True)
class Sequence:
    """A video's landmarks: full-frame shapes, 400-px crop positions, calibrated positions."""

    shapes: np.ndarray  # (N, 68, 2) int, frame pixels
    crop_positions: np.ndarray  # (N, 68, 2) int, crop pixels, as detected
    calibrated: np.ndarray  # (N, 68, 2) int, crop pixels, after LK + Kalman
    skipped: int  # leading frames without a face
    missed: int  # later frames that took the previous landmarks
    landmark_s: float  # seconds spent detecting faces and landmarks
    calibrate_s: float  # seconds spent cropping and calibrating


def read_frames(path: Path, max_frames: int) -> Iterator[np.ndarray]:
    """BGR frames of a video (opencv's decoder, as the authors read theirs), at most ``max_frames``."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"lrnet: cannot open {path}")
    try:
        for _ in range(max_frames):
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
    finally:
        cap.release()


def face_size(shape: np.ndarray) -> float:
    return float(np.max(shape.max(axis=0) - shape.min(axis=0)))


class DlibLandmarker:
    """dlib's HOG face detector and 68-point shape predictor (face_recognition_models' file)."""

    def __init__(self, predictor_path: Path | None = None) -> None:
        import dlib

        if predictor_path is None:
            import face_recognition_models

            predictor_path = Path(face_recognition_models.pose_predictor_model_location())
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path))

    def _detect(self, gray: np.ndarray, scale: float, upsample: int) -> list[tuple[float, ...]]:
        import cv2

        img = cv2.resize(gray, None, fx=scale, fy=scale) if scale != 1 else gray
        return [
            (r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale)
            for r in self._detector(img, upsample)
        ]

    def find(self, gray: np.ndarray) -> tuple[float, ...] | None:
        """The largest face of a whole frame, or None."""
        scale = min(1.0, DETECT_MAX_SIDE / max(gray.shape))
        for upsample in (0, 1):
            boxes = self._detect(gray, scale, upsample)
            if boxes:
                return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        return None

    def follow(self, gray: np.ndarray, previous: np.ndarray) -> tuple[float, ...] | None:
        """The face nearest the previous landmarks, searched in a window around them."""
        h, w = gray.shape
        centre = (previous.min(axis=0) + previous.max(axis=0)) / 2
        half = WINDOW_FACES * max(face_size(previous), 8.0) / 2
        x0, y0 = int(max(centre[0] - half, 0)), int(max(centre[1] - half, 0))
        x1, y1 = int(min(centre[0] + half, w)), int(min(centre[1] + half, h))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        scale = WINDOW_SIDE / (2 * half)
        boxes = self._detect(np.ascontiguousarray(gray[y0:y1, x0:x1]), scale, 0)
        if not boxes:
            return None
        boxes = [(b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0) for b in boxes]
        return min(
            boxes,
            key=lambda b: np.hypot((b[0] + b[2]) / 2 - centre[0], (b[1] + b[3]) / 2 - centre[1]),
        )

    def landmarks(self, gray: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        parts = self._predictor(gray, rect).parts()
        return np.array([(p.x, p.y) for p in parts], dtype=np.int64)


def detect_shapes(
    frames: Iterator[np.ndarray], marker: DlibLandmarker
) -> tuple[np.ndarray, int, int]:
    """Full-frame 68-point shapes (N, 68, 2), leading frames skipped, later misses filled."""
    import cv2

    shapes: list[np.ndarray] = []
    skipped = missed = 0
    for frame in frames:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        box = marker.find(gray) if not shapes else marker.follow(gray, shapes[-1])
        if box is None:
            if not shapes:
                skipped += 1
            else:
                missed += 1
                shapes.append(shapes[-1])
            continue
        shape = marker.landmarks(gray, box)
        if shapes:
            prev = shapes[-1]
            jump = np.hypot(*(shape.mean(axis=0) - prev.mean(axis=0)))
            ratio = face_size(shape) / max(face_size(prev), 1.0)
            if jump > 0.5 * face_size(prev) or not 0.7 <= ratio <= 1.3:
                missed += 1
                shape = prev
        shapes.append(shape)
    return np.array(shapes, dtype=np.int64).reshape(-1, 68, 2), skipped, missed


def crop_boxes(shapes: np.ndarray, width: int, height: int) -> list[tuple[int, int, int]]:
    """(x1, y1, side) per frame: the authors' fixed-size box, clipped to the frame."""
    sizes = [face_size(s) for s in shapes]
    stable = sizes[0] if len(sizes) == 1 else float(np.mean(sizes[:-1]))
    side0 = int(int(np.rint(stable)) * BOX_SCALE) // 2 * 2
    boxes = []
    held: np.ndarray | None = None
    for shape in shapes:
        centre = (shape.min(axis=0) + shape.max(axis=0)) // 2
        if held is not None and np.hypot(*(centre - held)) < CENTRE_HOLD_PX:
            centre = held
        held = centre
        x1, y1 = max(int(centre[0]) - side0 // 2, 0), max(int(centre[1]) - side0 // 2, 0)
        side = min(side0, width - x1, height - y1)
        boxes.append((x1, y1, side))
    return boxes


def crop_faces(
    frames: Iterator[np.ndarray], shapes: np.ndarray, skipped: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """400x400 BGR face crops and the landmarks in them (rounded to whole pixels)."""
    import cv2

    crops: list[np.ndarray] = []
    positions = []
    boxes: list[tuple[int, int, int]] | None = None
    for i, frame in enumerate(frames):
        if i < skipped:
            continue
        k = i - skipped
        if k >= len(shapes):
            break
        if boxes is None:
            boxes = crop_boxes(shapes, frame.shape[1], frame.shape[0])
        x1, y1, side = boxes[k]
        face = frame[y1 : y1 + side, x1 : x1 + side]
        interp = cv2.INTER_CUBIC if side < CROP else cv2.INTER_AREA
        crops.append(cv2.resize(face, (CROP, CROP), interpolation=interp))
        positions.append(np.rint((shapes[k] - (x1, y1)) * (CROP / side)).astype(np.int64))
    return crops, np.array(positions, dtype=np.int64).reshape(-1, 68, 2)


def kalman_merge(
    tracked_prev: np.ndarray,
    detected_prev: np.ndarray,
    detected: np.ndarray,
    forward: np.ndarray,
    backward: np.ndarray,
    ok: np.ndarray,
    variance: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One calibration step for 68 points: (merged positions, updated flow variance).

    ``forward`` is where the flow carries ``tracked_prev`` into this frame and ``backward``
    where it carries ``forward`` back (both whole pixels); ``ok`` is LK's status both ways.
    A point is tracked when its round trip closes within 2 px; its gain is
    ``K = (P + Q) / (P + Q + R)`` with ``R`` = how far the detection moved over how far the
    flow moved, and the merged point ``forward + K (detected - forward)``. Untracked points
    keep their detection. Positions are whole pixels, cut toward zero as the authors' int
    arrays cut them.
    """
    flow_step = np.linalg.norm(forward - tracked_prev, axis=1)
    flow_step[flow_step == 0] = 1
    r = np.linalg.norm(detected - detected_prev, axis=1) / flow_step
    tracked = ok & (np.linalg.norm(backward - tracked_prev, axis=1) <= FEEDBACK_PX)
    p = variance.copy()
    p[tracked] += PROCESS_NOISE
    gain = np.where(tracked, p / np.where(tracked, p + r, 1), 0.0)
    merged = np.where(tracked[:, None], forward + gain[:, None] * (detected - forward), detected)
    p[tracked] = (1 - gain[tracked]) * p[tracked]
    return np.trunc(merged).astype(np.int64), p


def calibrate(crops: list[np.ndarray], positions: np.ndarray) -> np.ndarray:
    """LK optical flow + Kalman refinement of the crop landmarks (N, 68, 2), whole pixels."""
    import cv2

    if len(positions) == 0:
        return positions.copy()
    lk: dict[str, Any] = {
        "winSize": LK_WINDOW,
        "maxLevel": LK_LEVELS,
        "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03),
        "flags": cv2.OPTFLOW_USE_INITIAL_FLOW,
    }
    out = [positions[0].copy()]
    variance = np.zeros(68)
    for i in range(len(positions) - 1):
        start = out[i].astype(np.float32)
        seed = positions[i + 1].astype(np.float32)
        fwd, st_f, _ = cv2.calcOpticalFlowPyrLK(crops[i], crops[i + 1], start, seed.copy(), **lk)
        back, st_b, _ = cv2.calcOpticalFlowPyrLK(crops[i + 1], crops[i], fwd, start.copy(), **lk)
        ok = (st_f.reshape(-1) == 1) & (st_b.reshape(-1) == 1)
        merged, variance = kalman_merge(
            out[i],
            positions[i],
            positions[i + 1],
            np.rint(fwd).astype(np.int64),
            np.rint(back).astype(np.int64),
            ok,
            variance,
        )
        out.append(merged)
    return np.array(out, dtype=np.int64)


def normalise(positions: np.ndarray) -> np.ndarray:
    """Crop pixels (N, 68, 2) -> (N, 136) in [-1, 1], x1, y1, ..., x68, y68."""
    half = CROP // 2
    return ((positions - half) / half).reshape(len(positions), -1).astype(np.float32)


def extract(path: Path, marker: DlibLandmarker, max_frames: int) -> Sequence:
    """A video's landmark sequence (decoded twice: landmarks first, then the fixed-size crops)."""
    import time

    t0 = time.perf_counter()
    shapes, skipped, missed = detect_shapes(read_frames(path, max_frames), marker)
    t1 = time.perf_counter()
    if len(shapes) == 0:
        empty = np.zeros((0, 68, 2), np.int64)
        return Sequence(shapes, empty, empty, skipped, missed, t1 - t0, 0.0)
    crops, positions = crop_faces(read_frames(path, max_frames), shapes, skipped)
    t2 = time.perf_counter()
    calibrated = calibrate(crops, positions)
    # decoding and cropping count to the landmarks' time; the calibration is timed alone
    landmark_s = (t1 - t0) + (t2 - t1)
    return Sequence(
        shapes, positions, calibrated, skipped, missed, landmark_s, time.perf_counter() - t2
    )
