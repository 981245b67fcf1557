"""The calibration cases made with ffmpeg and espeak-ng from the GRID clips."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks import bench_detection, make_calibration_set


def _streams(path: Path) -> list[str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.split()


@pytest.mark.slow
def test_builds_labelled_cases_from_seven_grid_clips(tmp_path: Path, media_dir: Path) -> None:
    media = tmp_path / "media"
    (media / "grid").mkdir(parents=True)
    for clip in sorted((media_dir / "grid").glob("*.mpg"))[
        :7
    ]:  # 7: the first six voices become TTS, the seventh stays real
        (media / "grid" / clip.name).symlink_to(clip)
    out = tmp_path / "set"
    rows = make_calibration_set.build(out, media, wild_audio=False)

    items = bench_detection.read_labels(out)  # the scorecard reads it as it is
    assert len(items) == len(rows)
    kinds = {(r["kind"], r["label"]) for r in rows}
    assert {
        ("original", "real"),
        ("reencode", "real"),
        ("dub", "fake"),
        ("audio_swap", "fake"),
    } <= kinds
    assert {("noise", "real"), ("trim", "real"), ("audio", "fake"), ("audio", "real")} <= kinds
    for r in rows:
        streams = _streams(out / r["path"])
        assert "audio" in streams and "video" in streams, r["path"]


def test_needs_the_grid_clips(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="GRID"):
        make_calibration_set.build(tmp_path / "out", tmp_path)
