"""The dfd command's error reporting."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main

pytestmark = pytest.mark.unit


def test_an_unusable_data_dir_is_one_line_naming_it(tmp_path: Path, monkeypatch, capsys):
    # A DFD_DATA_DIR under a file used to end every command in a NotADirectoryError traceback.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DFD_DATA_DIR", str(blocker / "data"))
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x20ftypisom")
    assert main(["demo", str(clip)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dfd: configuration: cannot use ")
    assert str(blocker) in err and "DFD_DATA_DIR" in err
    assert "Traceback" not in err
