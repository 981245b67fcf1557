"""The memory benchmark: one analysis measured in its own process, and the report."""

from __future__ import annotations

import pytest

from benchmarks.bench_memory import build_clip, markdown, run_child


@pytest.mark.integration
@pytest.mark.slow
def test_a_child_analysis_reports_its_own_peaks(media_dir, triton, tmp_path):
    clip = build_clip(media_dir, tmp_path / "grid_6s.mp4", 6)
    row = run_child(clip, triton.grpc_url, tmp_path / "data")
    assert row["duration_s"] == pytest.approx(6.0, abs=0.1)
    assert row["items"]["frames_sampled"] == 6 and row["items"]["faces"] >= 6
    # a fresh Python with the pipeline imported, then what the analysis added on top
    assert 50 < row["rss_before_mib"] <= row["peak_rss_mib"] < 2048
    # six 1280x720 RGB frames alone are 16 MiB of arrays
    assert 16 <= row["peak_traced_mib"] < row["peak_rss_mib"]
    assert row["label"] in {"authentic", "manipulated", "inconclusive"}


@pytest.mark.unit
def test_the_report_gives_each_length_and_the_growth_per_minute():
    def row(minutes: float, peak: int) -> dict:
        items = {
            "frames_sampled": int(minutes * 60),
            "faces": int(minutes * 60),
            "audio_windows": 3,
        }
        return {"duration_s": minutes * 60, "items": items, "rss_before_mib": 300,
                "peak_rss_mib": peak, "peak_traced_mib": peak - 400, "wall_s": 10.0}  # fmt: skip

    machine = {"cpu": "test cpu", "cores": 2, "python": "3.11"}
    report = {"when": "2026-12-02 14:00 UTC", "command": "python -m benchmarks.bench_memory",
              "machine": machine, "load_start": [0.1], "load_end": [0.2], "height": 720,
              "rows": [row(1, 900), row(15, 3700)]}  # fmt: skip
    text = markdown(report)
    assert "| 1.0 min | 60 | 60 | 3 | 300 | 900 | 500 | 10.0 |" in text
    assert "| 15.0 min | 900 | 900 | 3 | 300 | 3700 | 3300 | 10.0 |" in text
    assert "about 200 MiB per minute" in text
