"""YuNet: our decoding graph over the published ONNX, batching, and NMS."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from dfd.yunet_post import nms, select
from export.onnx_export import verify

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def detector(onnx_models):
    return ort.InferenceSession(str(onnx_models["yunet_n"]), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def astronaut(media_dir):
    from export.samples import still_image

    return still_image(media_dir)


def test_finds_exactly_the_one_face_in_the_astronaut_still(detector, astronaut):
    boxes, landmarks, scores = detector.run(None, {"image": astronaut})
    faces = select(boxes[0], landmarks[0], scores[0], score_threshold=0.6)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces.boxes[0]
    # the still (512x512) is scaled 1.25x into the 640 square; her face is in the upper middle
    assert 150 < x1 < x2 < 400 and 20 < y1 < y2 < 300
    assert 60 < x2 - x1 < 250 and 60 < y2 - y1 < 250
    lms = faces.landmarks[0].reshape(5, 2)
    assert np.all((lms[:, 0] > x1) & (lms[:, 0] < x2) & (lms[:, 1] > y1) & (lms[:, 1] < y2))
    assert lms[0, 0] < lms[1, 0]  # right eye (image left) before left eye
    assert faces.scores[0] > 0.8


def test_batch_of_two_equals_two_single_runs(detector, astronaut):
    flipped = astronaut[:, :, ::-1].copy()  # upside down: a different image, same size
    batch = detector.run(None, {"image": np.concatenate([astronaut, flipped])})
    for i, image in enumerate((astronaut, flipped)):
        single = detector.run(None, {"image": image})
        for b, s in zip(batch, single, strict=True):
            np.testing.assert_allclose(b[i], s[0], rtol=1e-5, atol=1e-3)


def test_any_multiple_of_32_works_and_prior_count_follows(detector):
    image = np.random.default_rng(0).uniform(0, 255, (3, 3, 320, 480)).astype(np.float32)
    boxes, landmarks, scores = detector.run(None, {"image": image})
    priors = sum((320 // s) * (480 // s) for s in (8, 16, 32))
    assert (
        boxes.shape == (3, priors, 4)
        and landmarks.shape == (3, priors, 10)
        and scores.shape == (3, priors)
    )
    assert np.all((scores >= 0) & (scores <= 1))


def test_decode_graph_matches_numpy_decoding_of_the_published_model(
    model_settings, onnx_models, astronaut
):
    batch = np.concatenate([astronaut, astronaut[:, :, ::-1]])
    diffs = verify("yunet_n", model_settings, {"image": batch}, onnx_path=onnx_models["yunet_n"])
    assert diffs["scores"] < 1e-5 and diffs["boxes"] < 1e-3, diffs


def test_nms_keeps_the_best_of_overlapping_boxes_in_score_order():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.1], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, iou=0.3, top_k=10), [1, 2])
    np.testing.assert_array_equal(nms(boxes, scores, iou=0.3, top_k=1), [1])
    np.testing.assert_array_equal(nms(boxes, scores, iou=0.99, top_k=10), [1, 0, 2, 3])
    assert nms(np.zeros((0, 4)), np.zeros(0), iou=0.3, top_k=5).size == 0


def test_select_applies_the_threshold_before_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    landmarks = np.arange(30, dtype=np.float32).reshape(3, 10)
    faces = select(boxes, landmarks, np.array([0.5, 0.95, 0.2]), score_threshold=0.4)
    assert len(faces) == 1
    np.testing.assert_array_equal(faces.landmarks[0], landmarks[1])
