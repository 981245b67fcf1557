"""The gateway's limits on a request's body pace, on a real ``dfd gateway`` (uvicorn,
httptools) over real sockets: a body that stalls or trickles is answered 408 within a
bounded time and the upload's partial file is removed; a body that pauses briefly, or
arrives steadily, is not refused."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IDLE_S = 2.0
BOUNDARY = "dfdbodytimeout"


@pytest.fixture(scope="module")
def server(tmp_path_factory, redis_server):
    from dfd.settings import Settings
    from tests.gateway.conftest import GatewayServer

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        redis_url=redis_server.url,
        url_signing_key="k" * 32,
        gateway_body_idle_timeout_s=IDLE_S,
        gateway_body_min_bytes_per_s=1024,
    )
    gw = GatewayServer(settings).start()
    yield gw
    gw.stop()


def _upload_head(server, body_length: int) -> bytes:
    return (
        f"POST /api/upload HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {body_length}\r\n\r\n"
    ).encode()


def _part_head() -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="clip.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _uploads(server) -> list[Path]:
    folder = server.settings.uploads_dir
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _wait_no_uploads(server, timeout_s: float = 5.0) -> list[Path]:
    deadline = time.monotonic() + timeout_s
    while (left := _uploads(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _assert_408(sock: socket.socket, started: float, phrase: str) -> float:
    sock.settimeout(IDLE_S * 5)
    status, headers, body = _read_response(sock)
    took = time.monotonic() - started
    assert status == 408, body
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/problem+json"
    doc = json.loads(body)
    assert doc["type"] == "urn:dfd:problem:request-timeout"
    assert phrase in doc["detail"], doc["detail"]
    # The connection is closed after the answer.
    assert sock.recv(1) == b""
    return took


def test_a_stalled_upload_is_answered_408_and_its_file_removed(server, small_videos) -> None:
    video = small_videos["mp4"].read_bytes()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_upload_head(server, 10_000_000))
        sock.sendall(_part_head() + video)  # the container is sniffed: a .part file is open
        started = time.monotonic()
        deadline = started + IDLE_S
        while not any(p.suffix == ".part" for p in _uploads(server)):
            assert time.monotonic() < deadline, "the upload never reached the disk"
            time.sleep(0.02)
        took = _assert_408(sock, started, "expected a byte within 2 s")
    assert IDLE_S - 0.2 < took < IDLE_S + 2.5, f"took {took:.1f} s"
    assert _wait_no_uploads(server) == []


def test_a_trickled_upload_is_answered_408_and_its_file_removed(server, small_videos) -> None:
    """A byte every 0.2 s is never idle for 2 s, but 5 bytes/s is under the 1024 minimum."""
    video = small_videos["mp4"].read_bytes()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_upload_head(server, 10_000_000))
        sock.sendall(_part_head() + video[:64])
        started = time.monotonic()
        sock.settimeout(0.2)
        rest = iter(video[64:])
        while time.monotonic() - started < IDLE_S * 4:
            try:
                sock.sendall(bytes([next(rest)]))
                if sock.recv(1, socket.MSG_PEEK):
                    break  # the answer has come
            except TimeoutError:
                continue
            except OSError:
                break  # the gateway closed after answering
        took = _assert_408(sock, started, "bytes/s")
    assert IDLE_S - 0.2 < took < IDLE_S + 2.5, f"took {took:.1f} s"
    assert _wait_no_uploads(server) == []


def test_a_stalled_json_body_is_answered_408(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"url": "https://'
        )
        started = time.monotonic()
        took = _assert_408(sock, started, "expected a byte within")
    assert took < IDLE_S + 2.5


def test_a_body_pausing_under_the_limit_then_completing_is_answered(server) -> None:
    """A pause shorter than the idle limit is not refused; the request is answered by the
    app (here its validation's 422, the URL being no URL), and keep-alive still works."""
    body = json.dumps({"url": "not a url"}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = (
            "POST /api/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[:5])
        time.sleep(IDLE_S / 2)
        sock.sendall(body[5:])
        status, headers, _ = _read_response(sock)
        assert status in (400, 422)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = _read_response(sock)
        assert status == 200


def test_an_idle_keep_alive_connection_is_not_answered_408(server) -> None:
    """Between requests no body is open: the body timer must not fire."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock)[0] == 200
        sock.settimeout(IDLE_S + 1)
        try:
            data = sock.recv(1)
        except TimeoutError:
            data = None
        # Either still open (no data) or closed by uvicorn's keep-alive timeout: never a 408.
        assert data in (None, b"")


def test_a_stalled_file_batch_is_answered_408_and_keeps_no_file(server, small_videos) -> None:
    """A multipart batch whose first file is complete and second stalls: 408, and neither
    file is left (nothing was enqueued, so nothing may stay)."""
    video = small_videos["mp4"].read_bytes()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_upload_head(server, 10_000_000).replace(b"/api/upload", b"/api/batch"))
        sock.sendall(_part_head() + video + b"\r\n" + _part_head() + video[:100])
        started = time.monotonic()
        deadline = started + IDLE_S
        while len(_uploads(server)) < 2:
            assert time.monotonic() < deadline, _uploads(server)
            time.sleep(0.02)
        _assert_408(sock, started, "expected a byte within")
    assert _wait_no_uploads(server) == []
