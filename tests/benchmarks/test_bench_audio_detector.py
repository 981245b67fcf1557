"""The audio-detector benchmark's pure parts: which checkpoints it takes and how it counts."""

from __future__ import annotations

import pytest

from benchmarks.bench_audio_detector import FileScore, check_audio_spec, group, markdown

pytestmark = pytest.mark.unit


def _f(path: str, label: str, score: float) -> FileScore:
    return FileScore(path, label, "audio", 1, score, score, score)


def test_only_waveform_to_score_checkpoints_are_taken():
    for checkpoint in ("aasist", "aasist_l", "rawgat_st"):
        check_audio_spec(checkpoint)
    with pytest.raises(SystemExit, match="meso4_df is not an audio detector"):
        check_audio_spec("meso4_df")


def test_group_counts_auc_and_the_files_on_the_wrong_side():
    records = [
        _f("f1", "fake", 0.9),
        _f("f2", "fake", 0.4),
        _f("r1", "real", 0.6),
        _f("r2", "real", 0.1),
    ]
    g = group(records)
    assert (g["n_fake"], g["n_real"]) == (2, 2)
    assert g["auc"] == 0.75  # 3 of the 4 fake-real pairs ordered right
    assert g["reals_above_half"] == ["r1"]
    assert g["fakes_at_or_below_half"] == ["f2"]


def test_markdown_lists_every_file_and_the_reals_above_half():
    records = [_f("f1", "fake", 0.9), _f("r1", "real", 0.6)]
    doc = {
        "checkpoint": "rawgat_st@1",
        "folder": "wild",
        "command": "python -m benchmarks.bench_audio_detector",
        "machine": {"cpu": "cpu", "cores": 2},
        "load_before": [1.0],
        "load_after": [1.0],
        "onnxruntime": "1",
        "threads": 2,
        "hop_s": 4.0,
        "timing": {
            "windows": 1,
            "wall_ms_min": 1,
            "wall_ms_median": 1,
            "cpu_ms_min": 1,
            "cpu_ms_median": 1,
        },
        "groups": {"audio": group(records)},
        "files": [r.__dict__ for r in records],
    }
    text = markdown(doc)
    assert "| audio | 2 (1/1) | 1.000 | 1/1 | 0/1 |" in text
    assert "Reals above 0.5: `r1`" in text
    assert "| `f1` | fake | audio | 1 | 0.900 |" in text
