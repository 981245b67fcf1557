"""SBI end to end: a checkpoint in the authors' format placed where ``dfd models pull sbi``
puts it (the cache) makes the detector installed; the export equals PyTorch, and Triton
serves it alone and as a step of the ensemble beside the visual detector.

The weights are random (the real ones are research-only and not here): what is checked
is the plumbing and the numerics, not detection.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

torch = pytest.importorskip("torch")
efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")


@pytest.fixture(scope="module")
def served(sbi_triton):
    """The session's visual + sbi Triton (``tests/fixtures/sbi.py``)."""
    return sbi_triton.settings, sbi_triton.repository, sbi_triton.client


def test_the_installed_detector_is_exported_checked_and_served(served, face_batch):
    from dfd.ensemble import ENSEMBLE_NAME, for_settings
    from export.onnx_export import run_onnx, verify

    settings, repository, client = served
    assert (repository / "sbi" / "config.pbtxt").is_file()
    assert [s.detector.name for s in for_settings(settings).steps] == ["visual", "sbi"]
    record = (settings.weights_cache_dir / "user-pulled.json").read_text()
    assert "sbi/sbi.tar" in record  # its digest, recorded at first use
    faces = face_batch[:2]
    # SBI's own crops of the same faces: uint8 at 380
    crops = (
        np.stack(
            [
                np.asarray(
                    Image.fromarray((f.transpose(1, 2, 0) * 255).astype(np.uint8)).resize(
                        (380, 380)
                    )
                )
                for f in faces
            ]
        )
        .transpose(0, 3, 1, 2)
        .copy()
    )
    diffs = verify("sbi", settings, {"face": crops})  # ONNX against PyTorch
    assert diffs["score"] < 1e-4 and diffs["heatmap"] < 1e-4
    want = run_onnx(settings.onnx_dir / "sbi.onnx", {"face": crops})
    got = client.infer("sbi", {"face": crops})
    np.testing.assert_allclose(got["score"], want["score"], atol=1e-5)
    np.testing.assert_allclose(got["heatmap"], want["heatmap"], atol=1e-5)
    out = client.infer(
        ENSEMBLE_NAME,
        {"faces": faces, "sbi_faces": crops},
        ["sbi_scores", "visual_scores", "sbi_heatmaps", "heatmaps"],
    )
    np.testing.assert_allclose(out["sbi_scores"], want["score"], atol=1e-5)
    np.testing.assert_allclose(out["sbi_heatmaps"], want["heatmap"], atol=1e-5)
    assert out["visual_scores"].shape == (2, 1) and out["heatmaps"].shape == (2, 8, 8)
