"""The face mesh converted from TFLite answers as the TFLite interpreter does, on real faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dfd.settings import Settings
from dfd.specs import MESH_POINTS, spec
from dispatcher.mouth import mesh_crop, mouth_opening

pytestmark = pytest.mark.unit

CLIPS = ("bbaf2n.mpg", "lrwp9a.mpg", "swiz3n.mpg")


def _grey_frames(path: Path, picks: tuple[int, ...]) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in picks:
                out.append(frame.to_ndarray(format="rgb24"))
            if i >= max(picks):
                break
    return out


@pytest.fixture(scope="module")
def mesh_settings(tmp_path_factory: pytest.TempPathFactory, weights_dir: Path) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("dfd-mesh"), weights_dir=weights_dir)


@pytest.fixture(scope="module")
def grid_crops(mesh_settings: Settings, media_dir: Path) -> np.ndarray:
    """Face-mesh crops of GRID frames (silent and speaking), faces found by YuNet."""
    import onnxruntime as ort

    from dfd.yunet_post import select
    from export.onnx_export import export_one
    from export.samples import detector_image

    session = ort.InferenceSession(
        str(export_one("yunet_n", mesh_settings)), providers=["CPUExecutionProvider"]
    )
    crops = []
    for name in CLIPS:
        for rgb in _grey_frames(media_dir / "grid" / name, (0, 30, 45)):
            image, scale = detector_image(rgb)
            boxes, landmarks, scores = session.run(None, {"image": image[None]})
            faces = select(boxes[0], landmarks[0], scores[0], score_threshold=0.6)
            assert len(faces) >= 1, f"{name}: no face found"
            grey = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
            crops.append(mesh_crop(grey, tuple(float(v) for v in faces.boxes[0] / scale)))
    return np.stack(crops).astype(np.float32)


def test_converted_mesh_matches_the_tflite_interpreter(mesh_settings, grid_crops):
    from export.onnx_export import export_one, verify

    path = export_one("mediapipe_face_mesh", mesh_settings)
    # landmarks are crop pixels (0..192): float32 reassociation in another runtime leaves
    # ~1e-4 px; a wrong layout or weight would move points by pixels
    diffs = verify(
        "mediapipe_face_mesh", mesh_settings, {"image": grid_crops}, onnx_path=path, atol=5e-3
    )
    assert diffs["landmarks"] < 5e-3 and diffs["face_prob"] < 1e-4


def test_mesh_finds_a_face_and_its_mouth_on_real_frames(mesh_settings, grid_crops):
    from export.onnx_export import export_one, run_onnx

    out = run_onnx(export_one("mediapipe_face_mesh", mesh_settings), {"image": grid_crops})
    assert out["landmarks"].shape == (len(grid_crops), MESH_POINTS * 3)
    assert np.all(out["face_prob"] > 0.9)
    pts = out["landmarks"].reshape(-1, MESH_POINTS, 3)
    # the inner lips lie below the eye corners, the face inside the crop
    assert np.all(pts[:, 13, 1] > pts[:, 33, 1]) and np.all(pts[:, 14, 1] > pts[:, 263, 1])
    assert np.all((pts[:, :, :2] > -10) & (pts[:, :, :2] < 202))
    opening = mouth_opening(out["landmarks"])
    assert np.all((opening >= 0) & (opening < 1.0))
    # frame 0 of a GRID clip is silence (closed mouth); mid-sentence frames open wider
    per_clip = opening.reshape(len(CLIPS), 3)
    assert np.mean(per_clip[:, 1:].max(axis=1) > per_clip[:, 0]) >= 2 / 3


def test_spec_names_its_weights_in_the_manifest():
    from export.weights import manifest

    (name,) = spec("mediapipe_face_mesh").weights
    row = manifest()[name]
    assert row.licence == "Apache-2.0"
    assert row.sha256 == "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493"


def test_the_repository_serves_the_mesh_only_when_mouth_sync_runs():
    from export.triton_repo import RepositoryOptions, model_config, render, role_specs

    assert "face_mesh" not in role_specs(Settings())
    roles = role_specs(Settings(detectors="visual, mouth_sync"))
    assert roles["face_mesh"].checkpoint == "mediapipe_face_mesh"
    assert set(roles) == {"face_detector", "vad", "visual", "face_mesh"}
    text = render(model_config(roles["face_mesh"], "cpu", RepositoryOptions()))
    assert 'name: "face_mesh"' in text and "max_batch_size: 32" in text
    assert 'name: "landmarks"' in text and "dims: 1404" in text
