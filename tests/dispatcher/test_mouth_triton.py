"""Mouth sync through the real pipeline and a real Triton serving the converted face mesh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dfd.settings import Settings
from dispatcher.pipeline import analyze
from dispatcher.store import LocalStore
from dispatcher.triton_client import TritonClient
from tests.fixtures.triton import triton_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DETECTORS = "visual, audio, lipsync, mouth_sync"


@pytest.fixture(scope="module")
def mesh_triton(weights_dir: Path) -> Iterator[str]:
    """Triton over the cpu repository built with mouth_sync named; its gRPC address."""
    from cli.local_triton import LocalTriton
    from export.triton_repo import build_repository

    settings = triton_settings(weights_dir, detectors=DETECTORS)
    repo = build_repository(settings, "cpu")
    assert (repo / "face_mesh" / "config.pbtxt").is_file()
    server = LocalTriton(settings, repo).start()
    try:
        yield server.grpc_url
    finally:
        server.stop()


def test_a_job_with_mouth_sync_reports_it_and_stores_its_chart(mesh_triton, media_corpus, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", decoder="pyav", detectors=DETECTORS)
    store = LocalStore(settings)
    with TritonClient(mesh_triton, timeout_s=120, retries=2) as client:
        result = analyze(media_corpus["grid_mpg"], settings, client, store, job_id="job-1")
    found = result.detectors["mouth_sync"]
    assert found.used and not found.fused and found.model == "mediapipe_face_mesh@1"
    assert found.score is not None and found.score < 0.4  # a real GRID clip: in sync
    assert found.detail is not None and found.detail.startswith("track 0: r ")
    assert len(result.evidence.mouth_sync) == 1
    assert "mouth_sync_t0.png" in result.evidence.mouth_sync[0]
    assert list((tmp_path / "data").rglob("*mouth_sync_t0.png"))
