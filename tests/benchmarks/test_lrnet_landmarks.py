"""The LRNet trial's landmark preprocessing: crop geometry, Kalman merge, LK calibration.

The Kalman step and the crop boxes are plain numpy; the calibration runs opencv's LK
flow (the ``lrnet-trial`` extra) and is skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import lrnet_landmarks as lm

pytestmark = pytest.mark.unit


def _face(x0: float, y0: float, size: float) -> np.ndarray:
    """68 points spread over a square face box (a stand-in shape with the right extent)."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (68, 2))
    pts[0], pts[1] = (0, 0), (1, 1)  # the box is exactly size x size
    return np.rint(pts * size + (x0, y0)).astype(np.int64)


def test_crop_box_is_1_2_times_the_mean_face_centred_and_held_still_under_1_42_px():
    shapes = np.stack([_face(100, 80, 100), _face(101, 80, 100), _face(110, 90, 100)])
    boxes = lm.crop_boxes(shapes, 640, 480)
    assert [b[2] for b in boxes] == [120, 120, 120]
    # centre (150, 130) -> x1 = 150 - 60; a 1 px move keeps the held centre; a 14 px one moves it
    assert boxes[0][:2] == (90, 70) and boxes[1][:2] == (90, 70) and boxes[2][:2] == (100, 80)


def test_crop_box_is_clipped_at_the_frame_edge():
    ((x1, y1, side),) = lm.crop_boxes(_face(0, 0, 100)[None], 110, 480)
    assert (x1, y1) == (0, 0) and side == 110  # 120 wanted, 110 px of frame


def test_kalman_keeps_the_detection_when_it_stands_still():
    prev = np.full((68, 2), 100)
    det = prev.copy()  # the detector did not move: R = 0, K = 1
    forward = prev + 3
    merged, p = lm.kalman_merge(prev, prev, det, forward, prev, np.ones(68, bool), np.zeros(68))
    np.testing.assert_array_equal(merged, det)
    np.testing.assert_allclose(p, 0)


def test_kalman_leans_on_the_flow_when_the_detection_jitters():
    prev = np.full((68, 2), 100)
    forward = prev + (1, 0)  # flow: 1 px
    det = prev + (9, 0)  # detection: 9 px -> R = 9, K = 0.3 / 9.3
    merged, p = lm.kalman_merge(prev, prev, det, forward, prev, np.ones(68, bool), np.zeros(68))
    k = 0.3 / 9.3
    np.testing.assert_array_equal(merged[:, 0], np.trunc(101 + k * 8))
    np.testing.assert_allclose(p, (1 - k) * 0.3)


def test_kalman_drops_points_that_do_not_come_back_or_are_lost():
    prev = np.full((68, 2), 100)
    forward = prev + (1, 0)
    det = prev + (9, 0)
    back = prev.copy()
    back[0] += (3, 0)  # round trip misses by 3 px > 2
    ok = np.ones(68, bool)
    ok[1] = False  # LK lost it
    var = np.full(68, 0.5)
    merged, p = lm.kalman_merge(prev, prev, det, forward, back, ok, var)
    np.testing.assert_array_equal(merged[:2], det[:2])
    assert p[0] == 0.5 and p[1] == 0.5 and p[2] < 0.8
    assert merged[2, 0] < det[2, 0]


def test_normalise_maps_the_crop_to_minus_one_one_interleaved():
    pos = np.zeros((1, 68, 2), np.int64)
    pos[0, 0] = (0, 400)
    pos[0, 1] = (200, 100)
    out = lm.normalise(pos)
    assert out.shape == (1, 136)
    np.testing.assert_allclose(out[0, :4], [-1, 1, 0, -0.5])


def test_calibration_smooths_jittered_detections_of_a_moving_texture():
    cv2 = pytest.importorskip("cv2", reason="opencv (the lrnet-trial extra)")
    rng = np.random.default_rng(1)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (600, 600)).astype(np.uint8), (0, 0), 2)
    truth = rng.uniform(120, 280, (68, 2))
    frames, detections, truths = [], [], []
    for t in range(20):
        shift = np.array([1.5 * t, 0.7 * t])
        m = np.float32([[1, 0, shift[0] - 100], [0, 1, shift[1] - 100]])
        frames.append(cv2.cvtColor(cv2.warpAffine(texture, m, (400, 400)), cv2.COLOR_GRAY2BGR))
        truths.append(truth + shift)
        detections.append(np.rint(truth + shift + rng.normal(0, 2.5, (68, 2))).astype(np.int64))
    detections_a, truths_a = np.array(detections), np.array(truths)
    calibrated = lm.calibrate(frames, detections_a)
    assert calibrated.shape == detections_a.shape and calibrated.dtype == np.int64
    raw_err = np.linalg.norm(detections_a[1:] - truths_a[1:], axis=2).mean()
    cal_err = np.linalg.norm(calibrated[1:] - truths_a[1:], axis=2).mean()
    raw_jitter = np.abs(np.diff(detections_a, 2, axis=0)).mean()
    cal_jitter = np.abs(np.diff(calibrated, 2, axis=0)).mean()
    assert cal_err < 0.8 * raw_err, (cal_err, raw_err)
    assert cal_jitter < 0.6 * raw_jitter, (cal_jitter, raw_jitter)
