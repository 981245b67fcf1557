"""Face detector post-processing in numpy: score threshold, NMS, top-k.

The served ``face_detector`` returns every prior (decoded boxes, landmarks, scores); the
caller keeps the confident, non-overlapping ones. numpy only: the dispatcher imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Faces:
    """Detections of one image, most confident first.

    Attributes:
        boxes: (K, 4) x1, y1, x2, y2 in input pixels.
        landmarks: (K, 10) right eye, left eye, nose tip, right and left mouth corner (x, y).
        scores: (K,) in [0, 1].
    """

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one x1,y1,x2,y2 box with each row of ``boxes``."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.3, top_k: int = 5000) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: (A, 4) x1, y1, x2, y2.
        scores: (A,).
        iou: a box overlapping a kept, higher-scoring box by more than this is dropped.
        top_k: most boxes kept.

    Returns:
        Indices into ``boxes`` of the kept boxes, highest score first.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < top_k:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        order = rest[iou_one_to_many(boxes[best], boxes[rest]) <= iou]
    return np.asarray(keep, dtype=np.int64)


def select(
    boxes: np.ndarray,
    landmarks: np.ndarray,
    scores: np.ndarray,
    *,
    score_threshold: float,
    iou: float = 0.3,
    top_k: int = 5000,
) -> Faces:
    """The faces of one image: priors above ``score_threshold``, then NMS and top-k."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    above = np.flatnonzero(scores >= score_threshold)
    kept = above[nms(boxes[above], scores[above], iou, top_k)]
    return Faces(boxes=boxes[kept], landmarks=landmarks[kept], scores=scores[kept])
