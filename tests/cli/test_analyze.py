"""``dfd analyze``: arguments, the JSON document, evidence written to --out."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from cli.analyze import ProgressPrinter, parse_weights
from cli.main import main
from dfd.calibration import load as load_calibration
from dfd.schemas import Result


@pytest.mark.unit
def test_parse_weights():
    assert parse_weights("visual=0.2,audio=0.8") == {"weight_visual": 0.2, "weight_audio": 0.8}
    assert parse_weights(" lipsync=1 ") == {"weight_lipsync": 1.0}
    for bad in ("face=1", "visual", "audio=x", "audio=-1", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="--weights"):
            parse_weights(bad)


@pytest.mark.unit
def test_plain_progress_prints_one_line_per_stage_change():
    out = io.StringIO()
    printer = ProgressPrinter(out)
    for stage, fraction in [
        ("decode", 0.0),
        ("decode", 0.5),
        ("decode", 1.0),
        ("decode", 1.0),
        ("faces", 0.0),
    ]:
        printer(stage, fraction)
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "dfd analyze: decode started",
        "dfd analyze: decode done",
        "dfd analyze: faces started",
    ]


@pytest.mark.unit
def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.mp4")]) == 1
    assert "is not a file" in capsys.readouterr().err


@pytest.mark.integration
def test_analyze_json_with_weights_and_out_dir(triton, media_corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DFD_TRITON_URL", triton.grpc_url)
    monkeypatch.setenv("DFD_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "evidence"
    code = main(
        [
            "analyze",
            str(media_corpus["dubbed"]),
            "--json",
            "--out",
            str(out),
            "--weights",
            "visual=0,audio=1,lipsync=0",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    result = Result.model_validate(json.loads(captured.out))  # stdout is only the document
    assert result.modalities["audio"].weight == pytest.approx(1.0)
    assert result.modalities["visual"].weight == 0.0
    # audio alone in the fusion: the calibration's fused probability of its calibrated score
    audio = result.detectors["audio"].calibrated
    assert result.confidence == pytest.approx(load_calibration().fused({"audio": audio}), abs=1e-3)
    assert result.label.value == "manipulated"
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert "timeline.png" in files and any(f.startswith("thumb_") for f in files)
    assert all(u.startswith("file://") for u in result.evidence.thumbnails)
    assert "decode done" in captured.err
