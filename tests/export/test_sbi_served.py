"""SBI end to end: a checkpoint in the authors' format placed where ``dfd models pull sbi``
puts it (the cache) makes the detector installed; the export equals PyTorch, and Triton
serves it alone and as a step of the ensemble beside the visual detector.

The weights are random (the real ones are research-only and not here): what is checked
is the plumbing and the numerics, not detection.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

torch = pytest.importorskip("torch")
efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")


@pytest.fixture(scope="module")
def served(tmp_path_factory, weights_dir):
    from cli.local_triton import LocalTriton
    from dfd.detectors import not_installed
    from dfd.ensemble import for_settings
    from dfd.settings import Settings
    from dispatcher.triton_client import TritonClient
    from export.random_weights import randomised_efficientnet
    from export.triton_repo import build_repository
    from tests.export.test_sbi import _TheirDetector
    from tests.fixtures.triton import triton_settings

    root = tmp_path_factory.mktemp("sbi_served")
    settings = Settings(data_dir=root / "data", weights_dir=weights_dir, detectors="visual,sbi")
    assert list(not_installed(settings)) == ["sbi"]
    # where `dfd models pull sbi` puts it: the cache
    target = settings.weights_cache_dir / "sbi" / "sbi.tar"
    target.parent.mkdir(parents=True)
    torch.save(
        {"model": randomised_efficientnet(_TheirDetector()).state_dict(), "epoch": 1}, target
    )
    assert not_installed(settings) == {}
    # reuse the other roles' current exports (their stamps decide; sbi's is new)
    shared = triton_settings(weights_dir).onnx_dir
    settings.onnx_dir.mkdir(parents=True)
    for name in ("yunet_n", "meso4_df", "silero_vad"):
        for suffix in (".onnx", ".onnx.stamp"):
            if (shared / f"{name}{suffix}").is_file():
                shutil.copy(shared / f"{name}{suffix}", settings.onnx_dir / f"{name}{suffix}")
    repository = build_repository(settings, "cpu")
    server = LocalTriton(settings, repository)
    server.start()
    client = TritonClient(
        server.grpc_url, timeout_s=120.0, retries=2, ensemble=for_settings(settings)
    )
    try:
        yield settings, repository, client
    finally:
        client.close()
        server.stop()


def test_the_installed_detector_is_exported_checked_and_served(served, face_batch):
    from dfd.ensemble import ENSEMBLE_NAME, for_settings
    from export.onnx_export import run_onnx, verify

    settings, repository, client = served
    assert (repository / "sbi" / "config.pbtxt").is_file()
    assert [s.detector.name for s in for_settings(settings).steps] == ["visual", "sbi"]
    record = (settings.weights_cache_dir / "user-pulled.json").read_text()
    assert "sbi/sbi.tar" in record  # its digest, recorded at first use
    crops = face_batch[:2]
    diffs = verify("sbi", settings, {"face": crops})  # ONNX against PyTorch
    assert diffs["score"] < 1e-4 and diffs["heatmap"] < 1e-4
    want = run_onnx(settings.onnx_dir / "sbi.onnx", {"face": crops})
    got = client.infer("sbi", {"face": crops})
    np.testing.assert_allclose(got["score"], want["score"], atol=1e-5)
    np.testing.assert_allclose(got["heatmap"], want["heatmap"], atol=1e-5)
    out = client.infer(ENSEMBLE_NAME, {"faces": crops}, ["sbi_scores", "visual_scores"])
    np.testing.assert_allclose(out["sbi_scores"], want["score"], atol=1e-5)
    assert out["visual_scores"].shape == (2, 1)
