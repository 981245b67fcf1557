"""Tell-tale container tags, on files written by ffmpeg and by a Mac (the c2pa fixture)."""

from __future__ import annotations

import subprocess

import pytest

from dispatcher.metadata import telltale_metadata
from tests.dispatcher.c2pa_media import to_mp4

pytestmark = pytest.mark.unit


def _by_key(findings):
    return {f.key: f for f in findings}


def test_an_ffmpeg_reencode_names_ffmpeg_and_has_no_creation_time(media_dir, tmp_path) -> None:
    found = _by_key(
        telltale_metadata(to_mp4(media_dir / "grid" / "bbaf2n.mpg", tmp_path / "a.mp4"))
    )
    assert found["format.encoder"].value.startswith("Lavf")
    assert "FFmpeg" in found["format.encoder"].explanation
    assert found["stream0.encoder"].kind == "reencode"
    assert found["stream0.handler_name"].value == "VideoHandler"
    assert found["format.creation_time"].kind == "creation_time"
    assert found["format.creation_time"].value is None


def test_a_reset_creation_time_is_reported(media_dir, tmp_path) -> None:
    out = tmp_path / "epoch.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-nostdin", "-y", "-i", str(media_dir / "grid" / "bbaf2n.mpg"),
         "-metadata", "creation_time=1970-01-01T00:00:01Z", "-c:v", "libx264", str(out)],
        check=True, timeout=60,
    )  # fmt: skip
    found = _by_key(telltale_metadata(out))
    assert found["format.creation_time"].value.startswith("1970-01-01")
    assert "reset" in found["format.creation_time"].explanation


def test_a_mac_recording_names_the_device_and_keeps_its_time(media_dir) -> None:
    found = _by_key(telltale_metadata(media_dir / "c2pa" / "C-recorded-as-mov.mov"))
    assert found["format.com.apple.quicktime.make"].value == "Apple"
    assert found["format.com.apple.quicktime.software"].value.startswith("macOS")
    assert "Apple" in found["stream0.handler_name"].explanation
    assert "format.creation_time" not in found  # present and plausible: nothing to say


def test_an_unreadable_file_has_no_findings(tmp_path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    assert telltale_metadata(junk) == []
