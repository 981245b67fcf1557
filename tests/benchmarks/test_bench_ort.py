"""The per-model cost benchmark: every servable model is timed, each model's items on the
benchmark clip follow the settings, and a short run writes the per-clip table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_ort import main
from benchmarks.ort_items import FACE_DETECTOR, benches, clip_items
from dfd.detectors import DETECTORS
from dfd.settings import Settings
from dfd.specs import spec

pytestmark = pytest.mark.unit


def test_every_model_the_registry_can_serve_is_timed_with_inputs_its_spec_takes():
    catalogue = benches(Settings())
    assert list(catalogue) == [FACE_DETECTOR, *DETECTORS]
    for name, bench in catalogue.items():
        model = spec(bench.checkpoint)
        batch = min(bench.batches)
        feeds = bench.feeds(batch, np.random.default_rng(0))
        assert list(feeds) == [t.name for t in model.inputs], name
        for t in model.inputs:
            got = feeds[t.name].shape
            fixed = got if model.max_batch_size == 0 else got[1:]
            assert all(w in (-1, g) for g, w in zip(fixed, t.dims, strict=True)), (name, got)
            assert feeds[t.name].dtype == np.dtype(t.numpy_dtype)
    assert catalogue["sbi"].random_weights and catalogue["ufd"].random_weights
    assert not catalogue["visual"].random_weights
    assert catalogue["speech"].items(512) == pytest.approx(16.384)  # seconds of audio


def _counts(settings: Settings) -> dict[str, float]:
    return {name: clip_items(name, settings).items for name in benches(settings)}


def test_the_clips_items_follow_the_settings():
    default = _counts(Settings())
    assert default == {
        FACE_DETECTOR: 30,  # 1 fps over 30 s
        "visual": 30,  # one face on each sampled frame
        "sbi": 30,
        "audio": 8,  # 4.04 s windows every 4 s, the last one ending at 30 s
        "audio_asv5": 8,
        "rawgat": 8,
        "ufd": 8,  # at most 8 whole frames a video
        "lipsync": 8,  # DFD_LIPSYNC_MAX_CLIPS
        "mouth_sync": 200,  # the 8 clips' frames at 25 fps
        "speech": 30,  # seconds of audio
        "voice": 30,  # ten ~3 s segments, three 1.6 s partials each
    }
    denser = _counts(Settings(sample_fps=2.0, audio_hop_s=2.0, lipsync_max_clips=4))
    assert denser[FACE_DETECTOR] == denser["visual"] == 60
    assert denser["audio"] == 14  # starts 0, 2, ..., 24 s and the one ending at 30 s
    assert (denser["lipsync"], denser["mouth_sync"], denser["ufd"]) == (4, 100, 8)
    assert clip_items("voice", Settings(), seconds=1.0).items == 0  # under one partial
    assert clip_items(FACE_DETECTOR, Settings()).batch == 5  # 16 MiB of 640x384 canvases


def test_a_short_run_writes_each_models_cells_and_its_share_of_the_clip(
    tmp_path, weights_dir, monkeypatch
):
    data_dir = Path(os.environ.get("DFD_TEST_DATA_DIR") or tmp_path / "data")
    monkeypatch.setenv("DFD_WEIGHTS_DIR", str(weights_dir))
    argv = ["--models", "visual", "speech", "--rounds", "1", "--min-s", "0"]
    argv += ["--batches", "1", "2", "--data-dir", str(data_dir), "--out", str(tmp_path)]
    assert main(argv) == 0
    result = json.loads((tmp_path / "ort_cpu.json").read_text())
    assert list(result["models"]) == ["visual", "speech"]
    visual, speech = result["models"]["visual"], result["models"]["speech"]
    assert visual["batches"] == [1, 2] and speech["batches"] == [512]  # a block, not a batch
    assert len(visual["cells"]) == 4 and all(c["cpu_ms_per_item"] > 0 for c in visual["cells"])
    assert visual["gflop_per_item"] == pytest.approx(0.120, abs=0.001)  # Meso4's convolutions
    rows = {r["model"]: r for r in result["per_clip"]}
    one_thread = {c["batch"]: c for c in visual["cells"] if c["setting"] == "1 thread"}
    assert rows["visual"]["items"] == 30 and rows["visual"]["batch"] == 2
    assert rows["visual"]["core_s_per_clip"] == pytest.approx(
        30 * one_thread[2]["cpu_ms_per_item"] / 1000, abs=1e-3
    )
    assert rows["speech"]["items"] == 30
    text = (tmp_path / "ort_cpu.md").read_text()
    assert "## What each detector adds to the 30 s 1080p benchmark clip" in text
    assert "| `visual` (meso4_df) | by default | 30 |" in text
