"""The voice check through the whole pipeline: a real Triton serving ``voice`` beside the
speech gate (``DFD_DETECTORS`` naming it), GRID clips joined with ffmpeg."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfd.settings import Settings
from dispatcher.pipeline import analyze
from dispatcher.store import LocalStore
from tests.fixtures.triton import triton_settings
from tests.fixtures.voice import SAME_SPEAKER

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DETECTORS = "visual,audio,lipsync,voice"


@pytest.fixture(scope="module")
def voice_triton(weights_dir: Path, tmp_path_factory) -> Iterator[tuple[Settings, object]]:
    from cli.local_triton import LocalTriton
    from dispatcher.triton_client import TritonClient
    from export.triton_repo import build_repository

    settings = triton_settings(weights_dir, detectors=DETECTORS)
    repository = build_repository(
        settings, "cpu", destination=tmp_path_factory.mktemp("voice") / "repository"
    )
    assert (repository / "voice" / "config.pbtxt").is_file()
    server = LocalTriton(settings, repository, ready_timeout_s=180)
    with server:
        client = TritonClient(server.grpc_url, timeout_s=60.0, retries=2)
        try:
            assert client.is_ready("voice")
            yield settings, client
        finally:
            client.close()


def _join(media_dir: Path, names: list[str], out: Path) -> Path:
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{media_dir / 'grid' / n}.mpg'\n" for n in names))
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing)]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(out)],
        check=True,
    )
    return out


def test_a_change_of_speaker_is_on_the_result_and_one_speaker_has_none(
    voice_triton, media_dir, tmp_path
):
    settings, client = voice_triton
    settings = settings.model_copy(
        update={"data_dir": tmp_path / "data", "decoder": "pyav", "public_base_url": "http://x:9"}
    )
    store = LocalStore(settings)

    two = _join(media_dir, ["swiz3n", "lwbsza"], tmp_path / "two.mp4")
    result = analyze(two, settings, client, store, job_id="two")
    assert result.voice_changes is not None and len(result.voice_changes) == 1, result
    assert 3.0 < result.voice_changes[0].time_s < 4.0  # the second man starts after 3 s
    voice = result.detectors["voice"]
    assert voice.used and not voice.fused and voice.score is None
    assert voice.detail.startswith("voice changes at 3.")
    assert result.models["voice"] == "resemblyzer@1"
    assert "voice" in result.timings_ms

    one = _join(media_dir, list(SAME_SPEAKER), tmp_path / "one.mp4")
    result = analyze(one, settings, client, store, job_id="one")
    assert result.voice_changes == []
    assert result.detectors["voice"].detail == "one voice across 2 speech segments"
