"""The floor benchmark's pieces: CPU of a process tree, the needed-frames decode, the report."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.bench_floor import cpu_of_tree, markdown, needed_decode
from dfd.settings import Settings
from dispatcher.decode_pyav import decode_pyav


@pytest.mark.unit
def test_cpu_of_tree_counts_a_live_child():
    # The child burns CPU, then waits: its time counts while it is alive.
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    child = subprocess.Popen(
        [sys.executable, "-c", burn + "print('done', flush=True)\ntime.sleep(30)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        before = cpu_of_tree(os.getpid())
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        assert cpu_of_tree(os.getpid()) - before >= 0.2
        assert cpu_of_tree(child.pid) >= 0.3
    finally:
        child.kill()
        child.wait()


@pytest.mark.integration
def test_needed_decode_produces_the_references_and_the_picks(media_corpus):
    # The floor's decoder keeps what the pipeline's planned pass keeps, on one thread.
    settings = Settings(decoder="pyav", lipsync_max_clips=1)
    path = media_corpus["mp4_h264"]
    got = needed_decode(path, settings)
    media = decode_pyav(path, settings)
    assert got["frames_in_stream"] == 75
    assert got["frames_decoded"] == media.frames_decoded < 75
    assert got["rgb_conversions"] == len(media.frames) == 3
    assert got["grey_conversions"] == 25
    assert got["cpu_s"] > 0


def _clip(name: str, floor: float, wall: float) -> dict:
    return {
        "name": name,
        "floor_cpu_s": {"decode (needed frames, audio)": floor / 2, "evidence encoding": floor / 2},
        "floor_core_s": floor,
        "floor_latency_2core_s": floor / 2,
        "floor_videos_per_min_2core": 120 / floor,
        "decode": {"frames_decoded": 10, "frames_in_stream": 20},
        "decoders": {},
        "items": {"frames_sampled": 3, "faces": 3, "audio_windows": 1, "lipsync_clips": 1},
        "pipeline": {"wall_s": wall, "cpu_s": 2 * floor, "stages_ms": {"decode": 100.0}},
        "latency_ratio_2core": wall / (floor / 2),
        "cpu_ratio": 2.0,
    }


@pytest.mark.unit
def test_report_states_the_load_and_the_ratios():
    report = {
        "when": "2026-12-02 00:00 UTC",
        "command": "python -m benchmarks.bench_floor",
        "machine": {"cpu": "X", "cores": 2, "python": "3", "onnxruntime": "1", "pyav": "2"},
        "loadavg": {"start": [5.0, 4.0, 3.0], "end": [6.0, 5.0, 4.0]},
        "runs": 3,
        "repeats": 2,
        "clips": [_clip("a", 4.0, 3.0), _clip("b", 2.0, 1.5)],
        "service": {"workers": 2, "videos": 6, "elapsed_s": 30.0, "videos_per_min": 12.0},
    }
    md = markdown(report)
    assert "[5.0, 4.0, 3.0]" in md and "a loaded machine" in md
    assert "| **latency / 2-core floor** | **1.50x** | **1.50x** |" in md
    assert "| **floor** | **4.00** | **2.00** |" in md
    assert "12.0 videos/min, 40% of the floor-limited 30.0" in md
