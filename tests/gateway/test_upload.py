"""POST /api/upload: streamed to disk, capped while reading, typed by magic bytes, enqueued."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def _uploads(client) -> list[Path]:
    folder = client.settings.uploads_dir
    return sorted(folder.iterdir()) if folder.exists() else []


def _queued(redis) -> int:
    return sum(redis.llen(f"rq:queue:{q}") for q in ("high", "default", "low"))


@pytest.mark.parametrize("ext", ["mp4", "webm", "mkv", "ts", "avi"])
def test_accepts_supported_containers(gateway, redis, small_videos, ext) -> None:
    with gateway() as client:
        data = small_videos[ext].read_bytes()
        response = client.post("/api/upload", files={"file": (f"x.{ext}", data)})
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["status"] == "waiting"
        assert response.headers["location"] == f"/api/job/{body['jobId']}"
        assert int(response.headers["ratelimit-remaining"]) >= 0
        job = Job.fetch(body["jobId"], connection=redis, serializer=JSONSerializer)
        assert job.func_name == "dispatcher.jobs.run_job"
        payload = job.args[0]
        assert payload["source"]["kind"] == "upload"
        assert Path(payload["source"]["path"]).read_bytes() == data
        assert payload["source"]["filename"] == f"x.{ext}"


def test_upload_of_real_clip_is_enqueued_with_retry_and_timeout(gateway, redis, grid_clip) -> None:
    with gateway(job_retries=2, retry_backoff_s=3, job_timeout_s=77) as client:
        response = client.post(
            "/api/upload?priority=high", files={"file": ("clip.mpg", grid_clip.read_bytes())}
        )
        assert response.status_code == 202, response.text
        job = Job.fetch(response.json()["jobId"], connection=redis, serializer=JSONSerializer)
        assert job.origin == "high"
        assert job.timeout == 77
        assert job.retries_left == 2
        assert job.retry_intervals == [3, 6]
        assert job.result_ttl == client.settings.result_ttl_s
        assert job.failure_ttl == client.settings.failure_ttl_s


def test_job_ids_are_unguessable(gateway, grid_clip) -> None:
    with gateway() as client:
        ids = {
            client.post("/api/upload", files={"file": ("c.mpg", grid_clip.read_bytes())}).json()[
                "jobId"
            ]
            for _ in range(3)
        }
    assert len(ids) == 3
    assert all(len(i) >= 32 for i in ids)


@pytest.fixture(scope="session")
def audio_and_animations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A second of a tone as WAV, FLAC, MP3, M4A and Opus, and a GIF animation (ffmpeg)."""
    out = tmp_path_factory.mktemp("audio")
    recipes = {
        "wav": ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"],
        "flac": ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"],
        "mp3": ["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "libmp3lame"],
        "m4a": ["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac"],
        "opus": ["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "libopus"],
        "gif": ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=5", "-t", "1"],
    }
    paths = {}
    for ext, args in recipes.items():
        path = out / f"media.{ext}"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-nostdin", "-y", *args, str(path)], check=True
        )
        paths[ext] = path
    return paths


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "m4a", "opus", "gif"])
def test_accepts_audio_files_and_animations(gateway, redis, audio_and_animations, ext) -> None:
    with gateway() as client:
        data = audio_and_animations[ext].read_bytes()
        response = client.post("/api/upload", files={"file": (f"x.{ext}", data)})
        assert response.status_code == 202, response.text
    assert _queued(redis) == 1


def test_renamed_text_file_is_415_and_not_kept(gateway, redis) -> None:
    with gateway() as client:
        response = client.post(
            "/api/upload", files={"file": ("movie.mp4", b"just some text\n" * 1000, "video/mp4")}
        )
        assert response.status_code == 415
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["type"] == "urn:dfd:problem:unsupported-media"
        assert problem["detail"].endswith("got text")
        assert _uploads(client) == []
    assert _queued(redis) == 0


def test_tiny_non_video_is_415(gateway, redis) -> None:
    with gateway() as client:
        response = client.post("/api/upload", files={"file": ("a.mp4", b"\x89PNG\r\n\x1a\n")})
        assert response.status_code == 415
    assert _queued(redis) == 0


def test_over_cap_is_413_and_not_kept(gateway, redis, grid_clip) -> None:
    data = grid_clip.read_bytes()
    with gateway(max_upload_bytes=len(data) - 1) as client:
        response = client.post("/api/upload", files={"file": ("clip.mpg", data)})
        assert response.status_code == 413
        assert response.json()["type"] == "urn:dfd:problem:too-large"
        assert _uploads(client) == []
    assert _queued(redis) == 0


def test_exactly_at_cap_is_accepted(gateway, grid_clip) -> None:
    data = grid_clip.read_bytes()
    with gateway(max_upload_bytes=len(data)) as client:
        assert client.post("/api/upload", files={"file": ("clip.mpg", data)}).status_code == 202


def test_missing_file_field_is_400(gateway, redis) -> None:
    with gateway() as client:
        response = client.post("/api/upload", files={"other": ("a.mp4", b"x")})
        assert response.status_code == 400
        assert response.json()["type"] == "urn:dfd:problem:invalid-request"
        response = client.post(
            "/api/upload", content=b"{}", headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        response = client.post("/api/upload", files={"file": ("a.mp4", b"")})
        assert response.status_code == 400
    assert _queued(redis) == 0


def test_bad_priority_is_400(gateway, grid_clip) -> None:
    with gateway() as client:
        response = client.post(
            "/api/upload?priority=urgent", files={"file": ("c.mpg", grid_clip.read_bytes())}
        )
        assert response.status_code == 400
        assert _uploads(client) == []


def test_announced_oversize_body_is_refused_before_reading(gateway) -> None:
    with gateway(max_upload_bytes=1000) as client:
        response = client.post(
            "/api/upload",
            content=b"x" * 10,
            headers={
                "content-type": "multipart/form-data; boundary=b",
                "content-length": str(50 << 20),
            },
        )
        assert response.status_code == 413
        assert response.headers["connection"] == "close"


def _raw_upload_until_answer(url: str, prefix: bytes, fill: int, limit: int) -> tuple[bytes, int]:
    """Send a chunked multipart upload that never ends; return the answer and bytes sent."""
    host, port = url.removeprefix("http://").split(":")
    boundary = "dfdtestboundary"
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        b"POST /api/upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
        + f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
    )

    def send_chunk(data: bytes) -> None:
        sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    send_chunk(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.mpg"\r\n\r\n'.encode()
        + prefix
    )
    sent = len(prefix)
    chunk = b"\0" * fill
    sock.settimeout(0.05)
    answer = b""
    while sent < limit:
        try:
            answer = sock.recv(65536)
            if answer:
                break
        except TimeoutError:
            pass
        send_chunk(chunk)
        sent += len(chunk)
    sock.settimeout(10)
    while b"\r\n\r\n" not in answer:
        more = sock.recv(65536)
        if not more:
            break
        answer += more
    # The gateway closes the connection instead of draining the rest of the body: an end of
    # stream, or a reset when our unread chunks were still in its receive buffer at close.
    sock.settimeout(5)
    try:
        while sock.recv(65536):
            pass
        closed = True
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        closed = False
    sock.close()
    assert closed, "the connection stayed open after the refusal"
    return answer, sent


def test_streamed_over_cap_is_413_before_the_body_ends(gateway_server, redis, grid_clip) -> None:
    """A real server answers 413 as soon as the cap is passed, while the body is still open."""
    cap = 1 << 20
    server = gateway_server(max_upload_bytes=cap)
    answer, sent = _raw_upload_until_answer(
        server.url, grid_clip.read_bytes()[:65536], 65536, 64 << 20
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"application/problem+json" in answer
    assert sent < cap + (4 << 20), f"client had sent {sent} bytes before the 413"
    assert list(server.settings.uploads_dir.glob("*")) == []
    assert _queued(redis) == 0


def test_streamed_text_is_415_after_the_first_bytes(gateway_server, redis) -> None:
    server = gateway_server()
    answer, sent = _raw_upload_until_answer(
        server.url, b"hello, this is not a video\n" * 400, 65536, 64 << 20
    )
    assert answer.startswith(b"HTTP/1.1 415"), answer[:200]
    assert sent < 4 << 20
    assert list(server.settings.uploads_dir.glob("*")) == []
    assert _queued(redis) == 0


def test_concurrent_upload_cap_per_ip(gateway_server, redis, grid_clip) -> None:
    """With one slot per IP, a second upload while the first is still streaming is 429."""
    server = gateway_server(max_concurrent_uploads_per_ip=1)
    boundary = "b0undary"
    release = threading.Event()
    first_started = threading.Event()
    data = grid_clip.read_bytes()
    results: dict[str, int] = {}

    def slow_body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mpg"\r\n\r\n'
        ).encode()
        yield data[:16384]
        first_started.set()
        release.wait(20)
        yield data[16384:]
        yield f"\r\n--{boundary}--\r\n".encode()

    def first() -> None:
        with httpx.Client(timeout=30) as http:
            results["first"] = http.post(
                server.url + "/api/upload",
                content=slow_body(),
                headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            ).status_code

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert first_started.wait(20)
        # Let the gateway take the first slot before the second request comes.
        time.sleep(0.5)
        second = httpx.post(server.url + "/api/upload", files={"file": ("b.mpg", data)}, timeout=30)
        assert second.status_code == 429
        assert second.json()["type"] == "urn:dfd:problem:too-many-uploads"
        assert "retry-after" in second.headers
    finally:
        release.set()
        thread.join(30)
    assert results["first"] == 202
    # The slot was given back: a third upload goes through.
    assert (
        httpx.post(
            server.url + "/api/upload", files={"file": ("c.mpg", data)}, timeout=30
        ).status_code
        == 202
    )
    assert _queued(redis) == 2


@pytest.mark.slow
def test_memory_stays_flat_during_a_200_mb_upload(gateway_server, redis) -> None:
    """The gateway's RSS (all its processes) grows by far less than the upload streams in."""
    import hashlib

    import psutil

    size = 200_000_000
    server = gateway_server(max_upload_bytes=size)
    gateway_proc = psutil.Process(server.process.pid)

    def rss() -> int:
        total = 0
        for p in [gateway_proc, *gateway_proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a child that ended since the listing
                total += p.memory_info().rss
        return total

    idle = rss()
    peak = idle
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss())
            time.sleep(0.01)

    boundary = "dfdmemoryboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'.encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    first = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
    chunk = hashlib.sha256(b"dfd").digest() * 8192  # 256 KiB, not all zeros
    digest = hashlib.sha256(first)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        length = len(head) + size + len(tail)
        sock.sendall(
            b"POST /api/upload HTTP/1.1\r\nHost: test\r\n"
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n".encode()
            + head
            + first
        )
        sent = len(first)
        while sent < size:
            piece = chunk[: size - sent]
            sock.sendall(piece)
            digest.update(piece)
            sent += len(piece)
            time.sleep(0)  # let the sampler run
        sock.sendall(tail)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    stop.set()
    sampler.join()
    assert answer.startswith(b"HTTP/1.1 202"), answer[:300]
    growth_mb = (peak - idle) / 1e6
    assert growth_mb < 50, f"gateway RSS grew by {growth_mb:.1f} MB during a 200 MB upload"
    [saved] = list(server.settings.uploads_dir.iterdir())
    assert saved.stat().st_size == size
    with saved.open("rb") as fh:
        on_disk = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            on_disk.update(block)
    assert on_disk.hexdigest() == digest.hexdigest()
    assert redis.llen("rq:queue:default") == 1


def test_a_stalled_upload_times_out_with_408(gateway_server, redis, grid_clip) -> None:
    """A client that stops sending mid-body is cut off after request_timeout_s, file removed."""
    server = gateway_server(request_timeout_s=1.0)
    boundary = "stall"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        body_start = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mpg"\r\n\r\n'.encode()
            + grid_clip.read_bytes()[:32768]
        )
        sock.sendall(
            b"POST /api/upload HTTP/1.1\r\nHost: test\r\n"
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 10000000\r\n\r\n".encode()
            + body_start
        )
        started = time.monotonic()
        answer = sock.recv(65536)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.5 < waited < 5
    assert list(server.settings.uploads_dir.iterdir()) == []
    assert redis.llen("rq:queue:default") == 0


@pytest.mark.parametrize("route", ["upload", "analyze"])
def test_a_timeout_during_the_enqueue_still_answers_with_the_queued_job(
    gateway, redis, grid_clip, monkeypatch, route
) -> None:
    """The request timeout firing while rq's call is in Redis must not cost the upload.

    rq's enqueue runs in a thread that cancellation cannot stop: the job got queued
    anyway, while the request answered 408 (the client never learned the job id) and
    the upload route deleted the file the queued job points to.
    """
    # 2 s: long enough that a loaded machine still reads the body in time (a 0.5 s limit
    # once answered 408 before the enqueue began), so the timeout fires in the enqueue
    with gateway(request_timeout_s=2.0) as client:
        queue = client.app.state.gateway.queue
        real = queue.enqueue

        def slow_enqueue(payload, *args, **kwargs):
            time.sleep(3.0)  # past the request timeout
            return real(payload, *args, **kwargs)

        monkeypatch.setattr(queue, "enqueue", slow_enqueue)
        if route == "upload":
            response = client.post("/api/upload", files={"file": ("a.mpg", grid_clip.read_bytes())})
        else:
            response = client.post("/api/analyze", json={"url": "https://93.184.215.14/v.mp4"})
        assert response.status_code == 202, response.text
        job = Job.fetch(response.json()["jobId"], connection=redis, serializer=JSONSerializer)
        if route == "upload":
            assert Path(job.args[0]["source"]["path"]).read_bytes() == grid_clip.read_bytes()
        assert _queued(redis) == 1
