"""The loopback folder server the soak and the URL tests share."""

from __future__ import annotations

import httpx
import pytest

from benchmarks.folder_server import serve_folder


@pytest.mark.unit
@pytest.mark.parametrize("quiet", [False, True])
def test_serves_the_folder_and_logs_only_when_not_quiet(tmp_path, capfd, quiet):
    (tmp_path / "clip.mpg").write_bytes(b"\x00\x01" * 100)
    with serve_folder(tmp_path, quiet=quiet) as base:
        assert base.startswith("http://127.0.0.1:")
        got = httpx.get(f"{base}/clip.mpg")
        missing = httpx.get(f"{base}/none.mpg")
    assert got.status_code == 200 and got.content == b"\x00\x01" * 100
    assert missing.status_code == 404
    logged = capfd.readouterr().err
    assert ("GET /clip.mpg" in logged) is not quiet
    with pytest.raises(httpx.ConnectError):  # stopped on leaving the block
        httpx.get(f"{base}/clip.mpg")
