"""``dfd demo``: a real clip through the whole local stack, as ``make demo`` runs it.

The session's Triton is passed in through ``DFD_TRITON_URL`` (``dfd serve`` starting its
own is covered in test_stack.py); Redis, the worker and the gateway are the demo's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from benchmarks.folder_server import serve_folder
from cli.demo import evidence_lines, is_url, progress_line

ROOT = Path(__file__).resolve().parents[2]
CLIP = "grid/bbaf2n.mpg"


def run_demo(source: str, data_dir: Path, triton_url: str, **env: str) -> tuple[int, str, set[int]]:
    """Runs ``dfd demo SOURCE``; its exit status, output, and every descendant seen."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DFD_")}
    environ.update(
        DFD_DATA_DIR=str(data_dir), DFD_TRITON_URL=triton_url, DFD_LOG_JSON="false", **env
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "demo", source],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    seen: dict[int, psutil.Process] = {}
    reader = threading.Thread(target=lambda: setattr(process, "captured", process.stdout.read()))
    reader.start()
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        try:
            for child in psutil.Process(process.pid).children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.1)
    if process.poll() is None:
        process.kill()
    process.wait()
    reader.join()
    _, alive = psutil.wait_procs(list(seen.values()), timeout=10)
    leftovers = {p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE}
    return process.returncode, process.captured.decode(errors="replace"), leftovers


def result_of(output: str) -> dict:
    """The pretty-printed result document between the progress lines and the verdict."""
    lines = output.splitlines()
    start = lines.index("{")
    end = next(i for i, line in enumerate(lines) if line == "}" and i > start)
    return json.loads("\n".join(lines[start : end + 1]))


@pytest.fixture
def clip_server(media_dir: Path) -> Iterator[str]:
    """The media folder served over HTTP on loopback; yields the clip's URL."""
    with serve_folder(media_dir) as base:
        yield f"{base}/{CLIP}"


@pytest.mark.integration
@pytest.mark.slow
def test_demo_uploads_a_clip_and_prints_result_and_evidence(
    triton, media_dir: Path, tmp_path: Path
) -> None:
    status, output, leftovers = run_demo(str(media_dir / CLIP), tmp_path, triton.grpc_url)

    assert status == 0, output
    assert "submitted (upload)" in output
    assert "] completed" in output
    result = result_of(output)
    assert 0 <= result["confidence"] <= 1
    assert result["label"] in ("manipulated", "authentic", "inconclusive")
    assert f"verdict: {result['label']}" in output
    folder_line = next(line for line in output.splitlines() if line.startswith("evidence folder: "))
    folder = Path(folder_line.removeprefix("evidence folder: ").split(" (")[0])
    assert folder.is_dir() and folder.is_relative_to(tmp_path / "evidence")
    urls = result["evidence"]["thumbnails"] + result["evidence"]["heatmaps"]
    assert urls and all(f"  {url}" in output for url in urls)
    # Everything the demo started is gone, and so are its evidence URLs' server.
    assert leftovers == set()
    assert output.rstrip().endswith("dfd demo: stopped everything it started")
    with pytest.raises(httpx.TransportError):
        httpx.get(urls[0], timeout=2)


@pytest.mark.integration
@pytest.mark.slow
def test_demo_analyzes_a_url(triton, clip_server: str, tmp_path: Path) -> None:
    status, output, leftovers = run_demo(
        clip_server, tmp_path, triton.grpc_url, DFD_FETCH_ALLOWED_NETWORKS='["127.0.0.1/32"]'
    )

    assert status == 0, output
    assert "submitted (url)" in output
    assert result_of(output)["media"]["duration_s"] > 0
    assert leftovers == set()


@pytest.mark.integration
def test_demo_reports_a_rejected_upload_and_still_stops_everything(tmp_path: Path) -> None:
    not_video = tmp_path / "notes.txt"
    not_video.write_text("plain text, not a video container\n" * 100)
    # No Triton is needed: the gateway refuses the file before anything is queued.
    status, output, leftovers = run_demo(str(not_video), tmp_path / "data", "127.0.0.1:9")

    assert status == 1
    assert "expected 202 from the gateway, got 415" in output
    assert "the services' logs are in" in output
    assert leftovers == set()


@pytest.mark.unit
def test_missing_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    status, output, leftovers = run_demo(
        str(tmp_path / "absent.mp4"), tmp_path / "data", "127.0.0.1:9"
    )
    assert status == 1
    assert "expected a video file or an http(s) URL" in output
    assert not (tmp_path / "data" / "redis").exists()


@pytest.mark.unit
def test_progress_line_and_url_detection() -> None:
    assert is_url("https://example.org/v.mp4") and is_url("HTTP://x") and not is_url("/tmp/v.mp4")
    line = progress_line(
        {"status": "active", "stage": "decode", "progress": 0.4, "attempt": 2}, 3.14
    )
    assert line == "[   3.1 s] active    decode     40% (attempt 2)"
    assert progress_line({"status": "waiting"}, 0) == "[   0.0 s] waiting"


@pytest.mark.unit
def test_evidence_lines_find_the_job_folder(tmp_path: Path) -> None:
    job = tmp_path / "abc123"
    job.mkdir()
    (job / "thumb.jpg").write_bytes(b"x")
    (job / "heat.jpg").write_bytes(b"x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.jpg").write_bytes(b"x")
    result = {
        "evidence": {
            "thumbnails": ["http://a/t"],
            "heatmaps": ["http://a/h"],
            "timeline_chart": "http://a/c",
        }
    }

    lines = evidence_lines(result, tmp_path, "abc123")

    assert lines[0] == f"evidence folder: {job} (2 files)"
    assert lines[1:] == ["evidence URLs:", "  http://a/t", "  http://a/h", "  http://a/c"]
    assert evidence_lines({"evidence": {}}, None, "abc123") == []


@pytest.mark.unit
def test_wait_backs_off_when_polls_are_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo polls twice a second, the default global limit allows one a second on
    average: a 429 while polling means wait as told, not a failed demo."""
    from cli import demo

    answers = iter(
        [
            httpx.Response(200, json={"jobId": "j", "status": "active", "stage": "decode"}),
            httpx.Response(429, headers={"Retry-After": "7"}, json={"title": "Too many"}),
            httpx.Response(200, json={"jobId": "j", "status": "completed", "result": {}}),
        ]
    )
    slept: list[float] = []
    monkeypatch.setattr(demo.time, "sleep", slept.append)
    transport = httpx.MockTransport(lambda request: next(answers))
    with httpx.Client(base_url="http://gateway.test", transport=transport) as http:
        view = demo.JobClient(http).wait("j", timeout_s=60, poll_s=0.5)
    assert view["status"] == "completed"
    assert 7 in slept
